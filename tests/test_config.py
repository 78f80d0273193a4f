"""The store config: shipped files are valid, every mistake is reported at once, secrets stay secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "store.example.toml"
DEMO = ROOT / "config" / "demo.toml"

# A small valid store the tests start from.
MINIMAL = """\
[store]
id = "s1"
name = "Test store"
timezone = "Europe/Rome"

[mqtt]
password = "f8Qz3LwXr9TbN2vKp7YmHc4D"

[http.tokens]
admin = "Jd6sV0nRq3XeW8uLkT1yZb5G"

[[zones]]
id = "entrance"

[[gateways]]
id = "gw-entrance"
zone = "entrance"

[[content]]
id = "welcome"

[[screens]]
id = "scr-entrance"
zone = "entrance"
playlist = ["welcome"]

[[rules]]
id = "entrance-welcome"
[rules.when]
zone = "entrance"
event = "zone_enter"
[rules.show]
content_id = "welcome"
"""

# Schema mistakes: each key is wrong on its own.
SCHEMA_MISTAKES = """\
[store]
id = "s1"
timezone = "Mars/Olympus"
colour = "red"

[mqtt]
port = "abc"

[http.tokens]
admin = "too-short"

[privacy_settings]
retention_days = 10
"""

# Cross-reference mistakes: each key is fine, the references between them are not.
CROSS_MISTAKES = """\
[[zones]]
id = "entrance"

[[gateways]]
id = "gw-1"
zone = "nowhere"

[[content]]
id = "welcome"

[[screens]]
id = "scr-1"
zone = "entrance"
playlist = ["welcome"]

[[screens]]
id = "scr-1"
zone = "entrance"
playlist = ["welcome"]

[[rules]]
id = "r1"
[rules.when]
zone = "entrance"
event = "zone_enter"
[rules.show]
content_id = "welcome"
screens = ["ghost"]
"""

SCHEMA_EXPECTED = [
    ("store.colour", "unknown key"),
    ("privacy_settings", "unknown key"),
    ("mqtt.port", "valid integer"),
    ("mqtt.port", "'abc'"),
    ("http.tokens.admin", "at least 16 characters"),
    ("store.timezone", "unknown timezone 'Mars/Olympus'"),
]
CROSS_EXPECTED = [
    ("gateways[0] (id 'gw-1').zone", "unknown zone 'nowhere'"),
    ("screens[1]", "duplicate id 'scr-1'"),
    ("rules[0] (id 'r1').show.screens", "unknown screen 'ghost'"),
]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any INSTORE_EDGE_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTORE_EDGE_")}
    env.update(extra)
    return env


def check_config(path: Path | str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real `instore-edge check-config` from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "check-config", str(path)],
        cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=60,
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def issue_lines(text: str) -> list[str]:
    return [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]


def assert_issue(text: str, path: str, fragment: str) -> None:
    lines = issue_lines(text)
    assert any(line.startswith(path) and fragment in line for line in lines), (
        f"no problem at {path!r} mentioning {fragment!r} in:\n{text}")


def write(tmp_path: Path, text: str, name: str = "store.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- The shipped configs ------------------------------------------------------------------------------

SECRET_PATHS = ("http.tokens.admin", "http.tokens.kiosk", "http.tokens.signage", "qr.secret", "central.token",
                "mqtt.password")


def gen_secret_env() -> dict[str, str]:
    """What `instore-edge gen-secret --env` prints, as an environment."""
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "gen-secret", "--env"], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=60, check=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def test_demo_config_passes_check_config() -> None:
    proc = check_config(DEMO.relative_to(ROOT))
    assert proc.returncode == 0, output(proc)
    assert "OK" in proc.stdout
    assert proc.stderr == ""


def test_the_example_config_is_refused_until_every_placeholder_secret_is_replaced(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    shipped = tomllib.loads(text)
    proc = check_config(EXAMPLE.relative_to(ROOT))
    assert proc.returncode == 1 and "OK" not in proc.stdout
    for path in SECRET_PATHS:
        assert_issue(output(proc), path, "published with instore-edge")
        assert_issue(output(proc), path, "instore-edge gen-secret")
    assert len(issue_lines(output(proc))) == len(SECRET_PATHS), output(proc)
    # `run` refuses it too, before listening on anything (the example listens on 0.0.0.0).
    local = write(tmp_path, text.replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
                  .replace("/var/lib/instore-edge/milano-duomo.db", (tmp_path / "edge.db").as_posix()))
    run = subprocess.run([sys.executable, "-m", "edge.cli", "run", "-c", str(local)], cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "not starting" in run.stderr
    assert_issue(run.stderr, "http.tokens.admin", "published with instore-edge")
    assert not (tmp_path / "edge.db").exists()
    # Fresh secrets from the environment (gen-secret --env, the deploy guide's env file) make it valid.
    env = gen_secret_env()
    assert sorted(env) == sorted(f"INSTORE_EDGE_{p.replace('.', '_').upper()}" for p in SECRET_PATHS)
    assert len(set(env.values())) == len(env)
    good = check_config(EXAMPLE.relative_to(ROOT), **env)
    assert good.returncode == 0, output(good)
    leaked = [v for v in [*env.values(), *_secrets_of(shipped)] if v in output(proc) + output(good) + run.stderr]
    assert not leaked


def _secrets_of(data: dict) -> list[str]:
    values = [data.get("mqtt", {}).get("password"), data.get("qr", {}).get("secret"),
              data.get("central", {}).get("token"), *data.get("http", {}).get("tokens", {}).values()]
    return [v for v in values if v is not None]


@pytest.mark.parametrize("value, why", [
    ("change-me-please-0123456789", "placeholder"),
    ("CHANGEME_admin_7Qk2x9LmP4vR", "placeholder"),
    ("your-token-here-aaaaaaaaaaa", "placeholder"),
    ("demo-admin-token-0000", "published with instore-edge"),
    ("aaaaaaaaaaaaaaaaaaaaaaaa", "repeats itself"),
    ("secretsecretsecretsecret", "repeats itself"),
    ("password1234567890", "guessable"),
    ("test-admin-token-0123456789", "guessable"),
    ("s1-Admin-Token-2024-05-01", "guessable"),
    ("P4ssw0rd!-qwerty-123", "guessable"),
    ("0123456789012345", "guessable"),
    ("x7Qk2x9", "at least 16 characters"),
])
def test_weak_secrets_are_refused_from_the_file_and_the_environment_without_echo(tmp_path: Path, value: str,
                                                                                 why: str) -> None:
    for key, env in (("kiosk", {}), ("signage", {"INSTORE_EDGE_HTTP_TOKENS_SIGNAGE": value})):
        text = MINIMAL.replace('[http.tokens]\n', f'[http.tokens]\n{key} = "{value}"\n' if not env else
                               '[http.tokens]\n')
        proc = check_config(write(tmp_path, text), **env)
        assert proc.returncode == 1, (value, output(proc))
        assert_issue(output(proc), f"http.tokens.{key}", why)
        assert_issue(output(proc), f"http.tokens.{key}", "gen-secret")
        if env:
            assert_issue(output(proc), f"http.tokens.{key}", "INSTORE_EDGE_HTTP_TOKENS_SIGNAGE")
        assert value not in output(proc)


def test_each_secret_must_be_its_own(tmp_path: Path) -> None:
    same = "Jd6sV0nRq3XeW8uLkT1yZb5G"  # MINIMAL's admin token
    proc = check_config(write(tmp_path, MINIMAL), INSTORE_EDGE_HTTP_TOKENS_KIOSK=same, INSTORE_EDGE_QR_SECRET=same)
    assert proc.returncode == 1
    assert_issue(output(proc), "http.tokens.kiosk", "the same as http.tokens.admin")
    assert_issue(output(proc), "qr.secret", "the same as http.tokens.admin")
    assert same not in output(proc)


def test_a_demo_store_may_keep_example_secrets_but_only_on_this_machine(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8")
    assert tomllib.loads(text)["store"]["demo"] is True
    assert check_config(write(tmp_path, text)).returncode == 0
    lan = check_config(write(tmp_path, text.replace('host = "127.0.0.1"\nport = 8080', 'host = "0.0.0.0"\nport = 8080'),
                             "lan.toml"))
    assert lan.returncode == 1
    assert_issue(output(lan), "http.host", "must listen on this machine only")
    no_demo = check_config(write(tmp_path, text.replace("demo = true", "demo = false"), "no-demo.toml"))
    assert no_demo.returncode == 1
    for path in ("http.tokens.admin", "qr.secret", "central.token"):
        assert_issue(output(no_demo), path, "published with instore-edge")
    # Even a demo needs 16 characters.
    short = check_config(write(tmp_path, text.replace('"demo-admin-token-0000"', '"demo-admin"'), "short.toml"))
    assert_issue(output(short), "http.tokens.admin", "at least 16 characters")


def test_every_secret_shipped_in_the_repository_is_known_as_published() -> None:
    from edge.config.secrets import SHIPPED

    for path in (EXAMPLE, DEMO):
        assert set(_secrets_of(tomllib.loads(path.read_text(encoding="utf-8")))) <= SHIPPED, path


def _schema_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, key name) for every key of the schema, nested tables included."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append((prefix + name, name))
        annotation = field.annotation
        inner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            keys.extend(_schema_keys(inner, f"{prefix}{name}."))
    return keys


def test_example_config_mentions_every_schema_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = []
    for path, name in _schema_keys(Config):
        as_key = re.search(rf"(?m)^\s*(#\s*)?{re.escape(name)}\s*=", text)
        as_table = re.search(rf"(?m)^\s*(#\s*)?\[\[?([\w.]+\.)?{re.escape(name)}\]\]?\s*$", text)
        if not (as_key or as_table):
            missing.append(path)
    assert not missing, f"keys not shown in {EXAMPLE.name}: {missing}"


def test_example_config_shows_secrets_as_placeholders_and_names_their_env_vars() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    secrets = [data["mqtt"]["password"], data["qr"]["secret"], data["central"]["token"],
               *data["http"]["tokens"].values()]
    assert all(s.startswith("change-me-") and len(s) >= 16 for s in secrets), secrets
    for var in ("INSTORE_EDGE_HTTP_TOKENS_ADMIN", "INSTORE_EDGE_MQTT_PASSWORD", "INSTORE_EDGE_QR_SECRET",
                "INSTORE_EDGE_CENTRAL_TOKEN"):
        assert var in text


def test_example_config_is_the_milano_duomo_store() -> None:
    cfg = load_config(EXAMPLE, env=gen_secret_env())
    assert (cfg.store.id, cfg.store.timezone) == ("milano-duomo", "Europe/Rome")
    zones = {z.id for z in cfg.zones}
    assert zones == {"entrance", "womenswear", "menswear", "fitting", "checkout", "pickup"}
    assert {g.zone for g in cfg.gateways if g.format == "native"} == zones
    assert cfg.beacons and cfg.kiosks
    rules = {r.id: r for r in cfg.rules}
    welcome = rules["entrance-welcome"]
    assert (welcome.when.zone, welcome.when.event, welcome.show.content_id) == ("entrance", "zone_enter", "welcome")
    assert (welcome.ttl_s, welcome.priority, welcome.show.screens) == (20, 10, [])
    pickup = rules["pickup-ready"]
    assert (pickup.when.zone, pickup.when.event, pickup.show.content_id) == ("pickup", "zone_enter", "pickup-desk")
    assert any(r.when.event == "kiosk.identify" for r in cfg.rules)


def test_demo_config_has_a_gateway_per_zone_screens_kiosks_and_rules() -> None:
    cfg = load_config(DEMO, env={})
    assert (cfg.store.id, cfg.store.name) == ("demo", "Demo store")
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.http.port) == ("127.0.0.1", 1883, 8080)
    assert Path(cfg.db.path) == DEMO.parent / "demo.db"
    assert 5 <= len(cfg.zones) <= 6
    for zone in cfg.zones:
        assert [g.id for g in cfg.gateways if g.zone == zone.id] == [f"gw-{zone.id}"]
        if zone.id != "fitting":
            assert cfg.screens_in_zone(zone.id), f"no screen in zone {zone.id}"
    assert len(cfg.kiosks) == 2
    assert len(cfg.content) >= 6
    assert all(len(t or "") >= 16 for t in (cfg.http.tokens.admin, cfg.http.tokens.kiosk, cfg.http.tokens.signage))
    events = {(r.when.zone if isinstance(r.when.zone, str) else None, r.when.event) for r in cfg.rules}
    assert ("entrance", "zone_enter") in events
    assert any(r.when.event == "kiosk.identify" for r in cfg.rules)


@pytest.mark.parametrize("path", [EXAMPLE, DEMO], ids=["store.example", "demo"])
def test_shipped_playlists_and_rules_name_defined_content(path: Path) -> None:
    cfg = load_config(path, env=gen_secret_env() if path == EXAMPLE else {})
    content = {c.id for c in cfg.content}
    for screen in cfg.screens:
        assert set(screen.playlist) <= content, screen.id
    for rule in cfg.rules:
        assert rule.show.content_id in content, rule.id
        item = cfg.content_item(rule.show.content_id)
        # A rule without data shows its item's text (and its translations): nothing can drift.
        assert item is not None and rule.show.data.get("title", item.title) == item.title, f"{rule.id}: title drifted"


# --- Errors -------------------------------------------------------------------------------------------

def test_schema_mistakes_are_all_reported_with_key_paths_and_exit_1(tmp_path: Path) -> None:
    proc = check_config(write(tmp_path, SCHEMA_MISTAKES))
    assert proc.returncode == 1
    assert "OK" not in proc.stdout
    for path, fragment in SCHEMA_EXPECTED:
        assert_issue(output(proc), path, fragment)
    assert "hint: write a whole number without quotes" in output(proc)
    assert "Traceback" not in output(proc)


def test_cross_reference_mistakes_are_all_reported_with_key_paths_and_exit_1(tmp_path: Path) -> None:
    proc = check_config(write(tmp_path, '[store]\nid = "s1"\n\n' + CROSS_MISTAKES))
    assert proc.returncode == 1
    for path, fragment in CROSS_EXPECTED:
        assert_issue(output(proc), path, fragment)


def test_schema_and_cross_reference_mistakes_are_reported_in_one_run(tmp_path: Path) -> None:
    proc = check_config(write(tmp_path, SCHEMA_MISTAKES + "\n" + CROSS_MISTAKES))
    assert proc.returncode == 1
    for path, fragment in SCHEMA_EXPECTED + CROSS_EXPECTED:
        assert_issue(output(proc), path, fragment)


def test_toml_syntax_error_names_the_line_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nid = "s1"\nname = "unterminated\n', "broken.toml")
    proc = check_config(path)
    assert proc.returncode == 1
    assert str(path) in proc.stderr
    assert_issue(output(proc), "(syntax)", "line 3")
    assert "Traceback" not in output(proc)


def test_missing_file_is_a_clear_message_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "no-such-store.toml"
    proc = check_config(path)
    assert proc.returncode == 1
    assert str(path) in proc.stderr
    assert_issue(output(proc), "(file)", "file not found")
    assert "store.example.toml" in proc.stderr
    assert "Traceback" not in output(proc)


def test_secret_values_never_appear_in_error_output(tmp_path: Path) -> None:
    secrets = {
        "short_token": "tiny-secret-1",
        "short_qr": "qr-secret-2",
        "misspelt_key": "misspelt-password-value-3",
        "env_token": "env-secret-4",
    }
    text = f"""\
[store]
id = "s1"
[mqtt]
password = 918273645546372819
pasword = "{secrets['misspelt_key']}"
[http.tokens]
admin = "{secrets['short_token']}"
[qr]
secret = "{secrets['short_qr']}"
[central]
token = ["central-secret-in-a-list-5"]
"""
    secrets["int_password"] = "918273645546372819"
    secrets["list_token"] = "central-secret-in-a-list-5"
    proc = check_config(write(tmp_path, text), INSTORE_EDGE_HTTP_TOKENS_KIOSK=secrets["env_token"])
    out = output(proc)
    assert proc.returncode == 1
    for path in ("mqtt.password", "mqtt.pasword", "http.tokens.admin", "http.tokens.kiosk", "qr.secret",
                 "central.token"):
        assert_issue(out, path, "")
    leaked = [name for name, value in secrets.items() if value in out]
    assert not leaked, f"secret values in the output ({leaked}):\n{out}"


# --- Environment --------------------------------------------------------------------------------------

def test_environment_overrides_secrets_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    from_file = load_config(path, env={})
    assert from_file.mqtt.password == "f8Qz3LwXr9TbN2vKp7YmHc4D"
    assert from_file.http.tokens.admin == "Jd6sV0nRq3XeW8uLkT1yZb5G"
    cfg = load_config(path, env={"INSTORE_EDGE_MQTT_PASSWORD": "m2Hc9TqW4zLr7XvNb3KpY8sD",
                                 "INSTORE_EDGE_HTTP_TOKENS_ADMIN": "Ue5kR1wQz8NcV3tLx6YbH0pG"})
    assert cfg.mqtt.password == "m2Hc9TqW4zLr7XvNb3KpY8sD"
    assert cfg.http.tokens.admin == "Ue5kR1wQz8NcV3tLx6YbH0pG"


def test_environment_supplies_secrets_missing_from_the_file(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[store]\nid = "s1"\n')
    monkeypatch.setenv("INSTORE_EDGE_MQTT_PASSWORD", "m2Hc9TqW4zLr7XvNb3KpY8sD")
    monkeypatch.setenv("INSTORE_EDGE_HTTP_TOKENS_ADMIN", "Ue5kR1wQz8NcV3tLx6YbH0pG")
    cfg = load_config(path)  # no env argument: the process environment
    assert cfg.mqtt.password == "m2Hc9TqW4zLr7XvNb3KpY8sD"
    assert cfg.http.tokens.admin == "Ue5kR1wQz8NcV3tLx6YbH0pG"
    assert cfg.http.tokens.kiosk is None


def test_check_config_validates_the_value_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert check_config(path).returncode == 0
    bad = check_config(path, INSTORE_EDGE_HTTP_TOKENS_ADMIN="short")
    assert bad.returncode == 1
    assert_issue(output(bad), "http.tokens.admin", "at least 16 characters")
    fixed = write(tmp_path, MINIMAL.replace("Jd6sV0nRq3XeW8uLkT1yZb5G", "short"), "short.toml")
    assert check_config(fixed).returncode == 1
    assert check_config(fixed, INSTORE_EDGE_HTTP_TOKENS_ADMIN="Ue5kR1wQz8NcV3tLx6YbH0pG").returncode == 0


def test_environment_values_do_not_leak_into_the_callers_data() -> None:
    data = {"store": {"id": "s1"}, "mqtt": {"host": "127.0.0.1"}}
    parse_config(data, env={"INSTORE_EDGE_MQTT_PASSWORD": "m2Hc9TqW4zLr7XvNb3KpY8sD"})
    assert data == {"store": {"id": "s1"}, "mqtt": {"host": "127.0.0.1"}}
    assert parse_config(data, env={}).mqtt.password is None


# --- Paths --------------------------------------------------------------------------------------------

def test_relative_db_path_resolves_next_to_the_config_file(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL + '\n[db]\npath = "data/store.db"\n', "etc/store.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path, env={})
    assert Path(cfg.db.path) == (tmp_path / "etc" / "data" / "store.db").resolve()


def test_absolute_db_path_is_kept(tmp_path: Path) -> None:
    target = (tmp_path / "var" / "store.db").resolve()
    path = write(tmp_path, MINIMAL + f'\n[db]\npath = "{target.as_posix()}"\n')
    assert Path(load_config(path, env={}).db.path) == target


def test_config_error_lists_each_issue_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"store": {"id": "s1"}, "mqtt": {"port": 0}, "db": {"pth": "x.db"}}, env={})
    paths = {issue.path for issue in info.value.issues}
    assert paths == {"mqtt.port", "db.pth"}
    assert "2 problem(s)" in str(info.value)
