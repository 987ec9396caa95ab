"""``aos dashboard``: a web page over the tables Kafka Connect fills (figures in :mod:`.queries`,
the page and its JSON in :mod:`.web`)."""
