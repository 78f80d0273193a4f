"""Edge ⇄ central sync: the shared wire types (`protocol`), the edge's client, the reference central
profile store (`central`) used for pilots, the demo and tests, and the HTTP plumbing both servers use
(`httpserver`, `jsonbody`, `clients`): the lower layer, which the edge imports and never the reverse."""
