"""Certificate documents (DCC XML, certification JSON): reading them into statements."""
