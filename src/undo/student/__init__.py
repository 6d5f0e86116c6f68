"""The student: SFT/LoRA training (train), batched inference (generate), evaluation."""
