"""The pages people see in a browser: the signage player, the kiosk, the shopper's QR pages, the associates'
staff app and the store-IT dashboard, as templates (Jinja), scripts and styles.

Everything is vendored (no CDN): store devices keep working without the internet. The Python that serves
these pages lives in the edge (`edge/pages/`, `edge/web/landing.py`); this package holds only what the
browser gets, and where it is.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
