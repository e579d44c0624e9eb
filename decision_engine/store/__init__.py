"""Redis: customer profiles and recent contacts, bulk import, and the embedded server."""
