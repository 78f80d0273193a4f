"""The store config: one TOML file, validated at start into one typed, immutable `Config`.

`sections` (settings), `layout` (zones, gateways, screens, kiosks, content, products) and `rules` hold the
models, `schema` the whole, `checks` what spans sections, `secrets` what makes a secret unusable, and
`loader` reads the file and the environment and reports every problem at once.
"""

from edge.config.issues import ConfigError, ConfigIssue
from edge.config.layout import GATEWAY_TOPICS, ProductConfig, ZoneConfig
from edge.config.loader import load_config, parse_config
from edge.config.rules import (PERSONAL_PLACEHOLDERS, TIERS, WEEKDAYS, RuleCap, RuleConfig, data_placeholders,
                               parse_hours, template_fields)
from edge.config.schema import Config
from edge.config.sections import ENV_PREFIX, ID_PATTERN

__all__ = ["Config", "ConfigError", "ConfigIssue", "load_config", "parse_config", "ENV_PREFIX", "ID_PATTERN",
           "GATEWAY_TOPICS", "PERSONAL_PLACEHOLDERS", "TIERS", "WEEKDAYS", "ProductConfig", "RuleCap", "RuleConfig",
           "ZoneConfig", "data_placeholders", "parse_hours", "template_fields"]
