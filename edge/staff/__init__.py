"""The store associates' app on the edge: accounts, sessions, the audit log, the live feed, the customer story,
pickup handover, returns and the mobile POS (pages in edge/pages/staff.py)."""
