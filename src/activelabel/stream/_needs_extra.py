"""Imported first by ``activelabel.stream``: without the [kafka] extra, say to install it."""

from activelabel._extras import require_extra

require_extra("kafka", "confluent_kafka")
