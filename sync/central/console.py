"""The central store's marketing console: campaigns listed, made with a form, previewed on a signage-like frame,
published to a few stores then to all, rolled back or withdrawn, with what each store reported.

Server-rendered HTML, no JavaScript, the central pages' stylesheet; the admin token is asked for and
remembered the way the fleet pages do (sync/central/pages.py: header, ?token=, then an HttpOnly SameSite=Strict
cookie). Forms post to the same origin only (the cookie is SameSite=Strict and a foreign Origin is refused),
and every write goes through the same storage calls and checks as the admin API. Roles are not there yet:
the admin token does everything (see the README).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Blueprint, Flask, Response, redirect, render_template, request

from sync.central import admin_token
from sync.central import content as c
from sync.central.content_api import campaign_view
from sync.central.pages import CSP, ago
from sync.central.storage import CentralError, Storage

TEMPLATES = ("message", "product", "offer")  # the edge's signage templates a campaign item may use
RULE_TEMPLATES = {
    "everyone": "Everyone in a zone",
    "gold": "Gold members in a zone",
    "segment": "Shoppers of a segment",
    "raw": "Rules as JSON (the [[rules]] shape)",
}
DAYS = (("mon", "Monday"), ("tue", "Tuesday"), ("wed", "Wednesday"), ("thu", "Thursday"), ("fri", "Friday"),
        ("sat", "Saturday"), ("sun", "Sunday"))
FORM_BODY_BYTES = c.MAX_ASSET_BYTES + 1024 * 1024  # an image upload and the form's fields


def rules_for(kind: str, content_id: str, zone: str, segment: str, raw: str) -> tuple[list[Any], list[str]]:
    """The campaign's rules from the form's rule template (or its raw JSON); errors name the form field."""
    if kind == "raw":
        try:
            rules = json.loads(raw or "[]")
        except ValueError as exc:
            return [], [f"Rules as JSON: not valid JSON ({exc})"]
        return (rules if isinstance(rules, list) else [rules]), []
    if kind in ("everyone", "gold"):
        if not zone:
            return [], ["Zone: give the zone where the content shows (a zone id of the stores, e.g. entrance)"]
        when: dict[str, Any] = {"zone": zone}
        if kind == "gold":
            when["tier"] = "gold"
        return [{"id": f"{content_id}-{kind}", "when": when, "show": {"content_id": content_id}}], []
    if kind == "segment":
        if not segment:
            return [], ["Segment: give the shoppers' segment, e.g. outdoor"]
        return [{"id": f"{content_id}-segment", "when": {"segments": segment}, "show": {"content_id": content_id}}], []
    return [], ["Rule: choose one of the rule templates"]


def rule_form(rules: list[dict[str, Any]], content_id: str) -> dict[str, str]:
    """The form's rule fields for stored rules: a template when they are one, else the raw JSON."""
    out = {"rule": "raw", "zone": "", "segment": "", "raw": json.dumps(rules, indent=2, ensure_ascii=False)}
    if len(rules) == 1 and set(rules[0]) == {"id", "when", "show"} and rules[0]["show"] == {"content_id": content_id}:
        when = rules[0]["when"]
        if set(when) == {"zone"} and isinstance(when["zone"], str):
            out.update(rule="everyone", zone=when["zone"])
        elif set(when) == {"zone", "tier"} and when["tier"] == "gold" and isinstance(when["zone"], str):
            out.update(rule="gold", zone=when["zone"])
        elif set(when) == {"segments"} and isinstance(when["segments"], str):
            out.update(rule="segment", segment=when["segments"])
    return out


def split_list(text: str) -> list[str]:
    return [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]


def form_of(draft: dict[str, Any] | None) -> dict[str, Any]:
    """The form's fields for a stored draft (or an empty form)."""
    if draft is None:
        return {"id": "", "content_id": "", "extra_items": 0, "name": "", "title": "", "body": "", "title_it": "",
                "body_it": "", "template": "message",
                "duration_s": "", "image": "", "all_stores": True, "stores": "", "tags": "", "start": "", "end": "",
                "days": [], "hours": "", "priority": "0", "rule": "everyone", "zone": "", "segment": "", "raw": "[]"}
    item = draft["content"][0]
    it = (item.get("i18n") or {}).get("it") or {}
    stores = draft["targets"]["stores"]
    schedule = draft.get("schedule") or {}
    days = schedule.get("days") or []
    hours = schedule.get("hours") or []
    return {"id": draft.get("id", ""), "content_id": item["id"], "extra_items": len(draft["content"]) - 1,
            "name": draft["name"], "title": item.get("title") or "",
            "body": item.get("body") or "", "title_it": it.get("title") or "", "body_it": it.get("body") or "",
            "template": item.get("template") or "message", "duration_s": str(item.get("duration_s") or ""),
            "image": item.get("image") or "", "all_stores": c.ALL in stores,
            "stores": ", ".join(s for s in stores if s != c.ALL), "tags": ", ".join(draft["targets"]["tags"]),
            "start": (schedule.get("start") or "")[:16], "end": (schedule.get("end") or "")[:16],
            "days": [days] if isinstance(days, str) else days,
            "hours": hours if isinstance(hours, str) else ", ".join(hours),
            "priority": str(draft.get("priority", 0)), **rule_form(draft["rules"], item["id"])}


def register(app: Flask, token: str, central: Storage, known_stores: Callable[[], list[str]]) -> None:
    """Add the console's pages (/campaigns...) to the central store's app."""
    bp = Blueprint("central_console", __name__, template_folder="templates")
    expected = token.encode()

    def refuse(status: int, title: str, message: str) -> Response:
        return Response(render_template("central_error.html", status=status, title=title, message=message,
                                        token_form=status == 401, action=request.path),
                        status=status, mimetype="text/html")

    def signed_in() -> Response | None:
        """None when the request carries the admin token; else the page that asks for it."""
        given, _ = admin_token.given()
        if not given:
            return refuse(401, "Sign in", "The campaign console needs the central store's admin token.")
        if not admin_token.matches(given, expected):
            return refuse(401, "Unknown token", "That is not the admin token of this central store.")
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.host:
                return refuse(403, "Refused", "This form was sent from another site.")
        return None

    def page(template: str, status: int = 200, **context: Any) -> Response:
        resp = Response(render_template(template, ago=ago, now=time.time(), days_all=DAYS, templates=TEMPLATES,
                                        rule_templates=RULE_TEMPLATES, **context), status=status, mimetype="text/html")
        return admin_token.remember(resp, *admin_token.given())

    def view(cid: str) -> dict[str, Any] | None:
        found = central.campaign_detail(cid)
        return campaign_view(found, known_stores()) if found is not None else None

    def targeted_stores(draft: dict[str, Any] | None) -> list[str]:
        if draft is None:
            return []
        tags = {s: list(m.get("tags") or []) for s, m in central.store_metas().items()}
        stores = sorted(set(known_stores()) | set(tags) | {s for s in draft["targets"]["stores"] if s != c.ALL})
        return [s for s in stores if c.targets_store(draft["targets"], s, tags.get(s, []))]

    @bp.get("/campaigns")
    def campaigns() -> Response:
        if (refused := signed_in()) is not None:
            return refused
        stores = known_stores()
        rows = [campaign_view(found, stores) for found in central.campaign_list()]
        return page("campaigns.html", rows=rows, message=request.args.get("done"))

    @bp.route("/campaigns/new", methods=["GET", "POST"])
    def new() -> Response:
        if (refused := signed_in()) is not None:
            return refused
        if request.method == "GET":
            return page("campaign_form.html", form=form_of(None), creating=True, errors=[])
        return save(None)

    @bp.route("/campaigns/<cid>/edit", methods=["GET", "POST"])
    def edit(cid: str) -> Response:
        if (refused := signed_in()) is not None:
            return refused
        found = view(cid)
        if found is None:
            return refuse(404, "No such campaign", f"No campaign {cid[:64]!r} here.")
        if request.method == "GET":
            return page("campaign_form.html", form={**form_of(found["draft"]), "id": cid}, creating=False, errors=[])
        return save(cid)

    def save(cid: str | None) -> Response:
        """A new draft from the form; the form again with every problem listed when it does not fit."""
        request.max_content_length = FORM_BODY_BYTES
        f = request.form
        form = {key: f.get(key, "").strip() for key in ("id", "name", "title", "body", "title_it", "body_it",
                                                        "template", "duration_s", "image", "stores", "tags", "start",
                                                        "end", "hours", "priority", "rule", "zone", "segment", "raw",
                                                        "content_id")}
        form["all_stores"] = f.get("all_stores") == "1"
        form["days"] = f.getlist("days")
        if cid is not None:
            form["id"] = cid
        errors: list[str] = []
        try:
            c.check_id(form["id"], "Campaign id")
        except c.Invalid as exc:
            errors += exc.errors
        upload = request.files.get("image_file")
        if upload is not None and upload.filename:
            data = upload.read(c.MAX_ASSET_BYTES + 1)
            try:
                kind = c.asset_type(upload.mimetype)
                if len(data) > c.MAX_ASSET_BYTES:
                    raise c.Invalid([f"Image: larger than {c.MAX_ASSET_BYTES // (1024 * 1024)} MB; "
                                     "send a smaller file"])
                if not data:
                    raise c.Invalid(["Image: the file is empty"])
                sha = hashlib.sha256(data).hexdigest()
                central.put_asset(sha, kind, data)
                form["image"] = sha
            except c.Invalid as exc:
                errors += [e.replace("Content-Type:", "Image:") for e in exc.errors]
        # Editing keeps the first item's id (rules name it) and the items the form does not show.
        found = view(cid) if cid is not None else None
        current = found["draft"] if found is not None else None
        others = current["content"][1:] if current else []
        form["extra_items"] = len(others)
        content_id = (current["content"][0]["id"] if current else None) or form["id"] or "content"
        form["content_id"] = content_id
        rules, rule_errors = rules_for(form["rule"], content_id, form["zone"], form["segment"], form["raw"])
        errors += rule_errors
        # What the form does not show of the item (its data, its texts in other languages) stays as it was.
        kept = current["content"][0] if current else {}
        item: dict[str, Any] = {k: v for k, v in kept.items() if k not in ("image", "duration_s", "i18n")}
        item.update(id=content_id, template=form["template"] or "message", title=form["title"], body=form["body"])
        if form["image"]:
            item["image"] = form["image"]
        if form["duration_s"]:
            try:
                item["duration_s"] = float(form["duration_s"])
            except ValueError:
                errors.append("Seconds on screen: expected a number")
        languages = {lang: texts for lang, texts in (kept.get("i18n") or {}).items() if lang != "it"}
        if form["title_it"] or form["body_it"]:
            languages["it"] = {k: v for k, v in (("title", form["title_it"]), ("body", form["body_it"])) if v}
        if languages:
            item["i18n"] = languages
        schedule: dict[str, Any] = {}
        for key in ("start", "end"):
            if form[key]:
                schedule[key] = form[key] if len(form[key]) > 16 else form[key] + ":00"
        if form["days"]:
            schedule["days"] = form["days"]
        if form["hours"]:
            schedule["hours"] = split_list(form["hours"])
        try:
            priority = int(form["priority"] or 0)
        except ValueError:
            errors.append("Priority: expected a whole number")
            priority = 0
        stores = [c.ALL] if form["all_stores"] else split_list(form["stores"])
        body = {"name": form["name"], "targets": {"stores": stores, "tags": split_list(form["tags"])},
                "schedule": schedule, "priority": priority, "content": [item, *others], "rules": rules}
        if not item["title"]:
            del item["title"]
        if not item["body"]:
            del item["body"]
        if not errors:
            try:
                saved = central.put_campaign(form["id"], c.validate_campaign(body))
            except c.Invalid as exc:
                errors += exc.errors
            except CentralError as exc:
                errors.append(str(exc))
            else:
                return redirect(f"/campaigns/{saved['id']}?done=saved", code=303)  # type: ignore[return-value]
        return page("campaign_form.html", status=400, form=form, creating=cid is None, errors=errors)

    @bp.get("/campaigns/<cid>")
    def detail(cid: str) -> Response:
        if (refused := signed_in()) is not None:
            return refused
        found = view(cid)
        if found is None:
            return refuse(404, "No such campaign", f"No campaign {cid[:64]!r} here.")
        return page("campaign.html", c=found, draft=found["draft"], targeted=targeted_stores(found["draft"]),
                    message=request.args.get("done"), error=request.args.get("error"))

    @bp.post("/campaigns/<cid>/<action>")
    def act(cid: str, action: str) -> Response:
        if (refused := signed_in()) is not None:
            return refused
        if action not in ("publish", "rollback", "withdraw"):
            return refuse(404, "No such action", "A campaign can be published, rolled back or withdrawn.")
        try:
            if action == "publish":
                stores = request.form.getlist("stores")
                if request.form.get("scope") == "selected":
                    if not stores:
                        raise CentralError("choose at least one store to publish to, or publish to every target")
                    central.publish_campaign(cid, stores)
                else:
                    central.publish_campaign(cid, None)
            elif action == "rollback":
                central.rollback_campaign(cid)
            else:
                central.withdraw_campaign(cid)
        except CentralError as exc:
            if exc.status == 404:
                return refuse(404, "No such campaign", str(exc))
            return redirect(f"/campaigns/{cid}?error={quote(str(exc)[:300])}", code=303)  # type: ignore[return-value]
        done = {"publish": "published", "rollback": "rolled-back", "withdraw": "withdrawn"}[action]
        return redirect(f"/campaigns/{cid}?done={done}", code=303)  # type: ignore[return-value]

    @bp.get("/campaigns/assets/<sha>")
    def asset(sha: str) -> Response:
        if (refused := signed_in()) is not None:
            return refused
        found = central.get_asset(sha) if c.SHA256_RE.fullmatch(sha) else None
        if found is None:
            return refuse(404, "No such image", "No asset with that SHA-256 here.")
        return Response(found[1], content_type=found[0], headers={"Cache-Control": "private, max-age=3600"})

    @bp.after_request
    def _headers(resp: Response) -> Response:
        if resp.mimetype == "text/html":
            resp.headers["Content-Security-Policy"] = CSP
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    app.register_blueprint(bp)
