"""Every check a MedGround sample must pass, each stage with its own reason codes."""
