"""The pieces train.py puts together: its flags and the settings they resolve to (settings),
the loader (loader), augmentations (augment, with rhythm's beat analysis), the training step
and epoch (loop), losses, learning-rate schedules, validation, precision by card, the
pre-training memory check (batch_fit) and torchrun's processes (distributed)."""
