"""Knowledge distillation: a student learns to imitate a teacher.

``losses`` holds the pure tensor math, ``config`` the recipe schema, ``trainer`` the
Accelerate training loop, ``teacher_cache`` the offline top-k cache, ``generate`` the
teacher/student sampling for sequence-level and on-policy KD, and ``stage`` the
``run(ctx)`` entry point the pipeline calls.
"""
