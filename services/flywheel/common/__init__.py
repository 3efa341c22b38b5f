"""Runtime shared by every service. Imports no service package."""
