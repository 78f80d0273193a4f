"""Edge ⇄ central sync: the shared wire types (`protocol`), the edge's client, and the reference central
profile store (`central`) used for pilots, the demo and tests."""
