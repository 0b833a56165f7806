"""`python -m llmd_operator.profile [profile|profile-job] ...` (no sub-command: `profile`)."""

from .command import main

main()
