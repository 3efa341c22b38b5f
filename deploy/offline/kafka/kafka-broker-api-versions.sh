#!/bin/sh
# Asks the broker for the versions of its API (a request answered, not an open port), as the
# script of the same name in the Kafka distribution does: the healthcheck of compose.yaml.
exec java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml \
  -cp "/opt/kafka/libs/*" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
