"""Print the current one-time code of a demo user (what their authenticator app would show).

Usage: .venv/bin/python scripts/demo_code.py USER [USERS_FILE]   (default var/demo/demo-users.txt)
"""

import sys
from pathlib import Path

import pyotp

user = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
users = Path(sys.argv[2] if len(sys.argv) > 2 else "var/demo/demo-users.txt")
secrets = dict(line.split() for line in users.read_text().splitlines() if line.strip())
if user not in secrets:
    sys.exit(f"no demo user {user!r}; the demo users are {', '.join(secrets)}")
print(pyotp.TOTP(secrets[user]).now())
