"""Every text of the kiosk page, once: the template renders them and kiosk.js switches between languages.

`kiosk_strings()` runs in a request, in its language (Flask-Babel); the page's boot JSON carries it for
every language the edge speaks (edge.web.i18n.strings_by_language), so the kiosk switches language
without asking the server. Texts with %(name)s placeholders are filled in by the script; plurals are
{CLDR category: text} (edge.web.i18n.plural), picked in the browser with Intl.PluralRules.
"""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _

from edge.web.i18n import plural


def kiosk_strings() -> dict[str, Any]:
    """The kiosk's texts in the request's language (template: `t.<key>`, kiosk.js: `t('<key>')`)."""
    return {
        "language": _("Language"),
        "offline": _("Offline"),
        "welcome": _("Welcome"),
        "welcome_lead": _("Scan your loyalty card or type its number to see your wishlist, your online cart and "
                          "orders ready for pickup."),
        "card_number": _("Loyalty card number"),
        "continue": _("Continue"),
        "number_pad": _("Number pad"),
        "clear": _("Clear"),
        "delete_label": _("Delete the last digit"),
        "stay_anonymous": _("Stay anonymous"),
        "consent_note": _("We show your name and lists only if you agreed to personalisation in the app."),
        "ready_for_pickup": _("Ready for pickup"),
        "your_wishlist": _("Your wishlist"),
        "in_online_cart": _("In your online cart"),
        "around_you": _("Around you in %(zone)s"),
        "bag_count": plural(lambda t, n: t.ngettext("Bag: %(num)d item", "Bag: %(num)d items", n)),
        "continue_on_phone": _("Continue on your phone"),
        "finish": _("Finish"),
        "add_to_bag": _("Add to bag"),
        "in_bag": _("In your bag ✓"),
        "back": _("Back"),
        "qr_lead": _("Point your phone's camera at the code: your bag comes with you."),
        "qr_alt": _("QR code to continue on your phone"),
        "done": _("Done"),
        "hi_name": _("Hi, %(name)s!"),
        "welcome_exclaim": _("Welcome!"),
        "lead_personal": _("Here is what you saved online. Tap a product to see it."),
        "lead_anonymous": _("Tap a product to see it, add it to your bag, and take the bag with you on your phone."),
        "lead_unknown_card": _("We could not find that card here, but you can browse and take your bag with you."),
        "order_line": _("Order %(order)s"),
        "order_bay": _("bay %(bay)s"),
        "find_it_in": _("Find it in %(zone)s"),
        "need_code": _("Type or scan your loyalty card number, or tap “Stay anonymous”."),
        "qr_error": _("The code cannot be shown right now. Please ask a member of staff."),
        "call_associate": _("Call an associate"),
        "associate_coming": _("An associate is on the way."),
    }
