"""The edge's parts that hold what it knows of the store and its shoppers: presence, identity, rules,
shoppers (profiles, activity, the consent gate), the catalogue, displays, QR journeys, gateway health."""
