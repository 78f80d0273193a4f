"""The whole config: one typed, immutable object made of the sections, the layout and the rules."""

from __future__ import annotations

from pydantic import Field

from edge.config.layout import (BeaconConfig, ContentConfig, GatewayConfig, KioskConfig, ProductConfig, ScreenConfig,
                                ZoneConfig)
from edge.config.rules import RuleConfig
from edge.config.sections import (CentralSection, DbSection, HttpSection, LimitsSection, MqttSection, PrivacySection,
                                  QrSection, StoreSection, StrictModel)


class Config(StrictModel):
    store: StoreSection
    mqtt: MqttSection = MqttSection()
    db: DbSection = DbSection()
    http: HttpSection = HttpSection()
    central: CentralSection = CentralSection()
    qr: QrSection = QrSection()
    privacy: PrivacySection = PrivacySection()
    limits: LimitsSection = LimitsSection()
    zones: list[ZoneConfig] = Field(default_factory=list)
    gateways: list[GatewayConfig] = Field(default_factory=list)
    beacons: list[BeaconConfig] = Field(default_factory=list)
    screens: list[ScreenConfig] = Field(default_factory=list)
    kiosks: list[KioskConfig] = Field(default_factory=list)
    content: list[ContentConfig] = Field(default_factory=list)
    products: list[ProductConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)

    @property
    def prefix(self) -> str:
        """Topic prefix P = {topic_prefix}/{store_id}."""
        return f"{self.mqtt.topic_prefix}/{self.store.id}"

    def zone(self, zone_id: str) -> ZoneConfig | None:
        return next((z for z in self.zones if z.id == zone_id), None)

    def gateway(self, gateway_id: str) -> GatewayConfig | None:
        return next((g for g in self.gateways if g.id == gateway_id), None)

    def screens_in_zone(self, zone_id: str) -> list[ScreenConfig]:
        return [s for s in self.screens if s.zone == zone_id]

    def content_item(self, content_id: str) -> ContentConfig | None:
        return next((c for c in self.content if c.id == content_id), None)
