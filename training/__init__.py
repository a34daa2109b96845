"""The pieces train.py puts together: its flags (settings), augmentations (augment, with
rhythm's beat analysis), losses, learning-rate schedules, precision by card and the
pre-training memory check (batch_fit)."""
