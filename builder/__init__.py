"""MedGround's offline builder: sources → candidates → queries → verification → dataset → Hub."""

__version__ = "0.1.0"
