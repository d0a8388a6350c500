"""`python -m slmkit` (and `accelerate launch -m slmkit distill RECIPE` for multi-process training)."""

from slmkit.cli import main

if __name__ == "__main__":
    main()
