"""The fine-tune stage: supervised training of a model on the recipe's labelled data (full or LoRA)."""
