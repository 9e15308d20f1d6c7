#!/bin/sh
# The lab ZooKeeper image's entrypoint: Debian's ZooKeeper 3.8 jars behind the debezium/zookeeper
# contract, so a stack written for quay.io/debezium/zookeeper runs unchanged in the lab.
#   SERVER_ID (1), SERVER_COUNT (1), JVMFLAGS, LOG_LEVEL (INFO); /zookeeper/{data,txns,conf,logs};
#   ports 2181 (clients), 2888 (followers), 3888 (election); peers reachable as zookeeper-N.
set -eu
: "${SERVER_ID:=1}" "${SERVER_COUNT:=1}" "${LOG_LEVEL:=INFO}" "${JVMFLAGS:=}"
mkdir -p /zookeeper/data /zookeeper/txns /zookeeper/conf /zookeeper/logs

cfg=/zookeeper/conf/zoo.cfg
{
  echo "tickTime=2000"
  echo "initLimit=10"
  echo "syncLimit=5"
  echo "dataDir=/zookeeper/data"
  echo "dataLogDir=/zookeeper/txns"
  echo "clientPort=2181"
  echo "autopurge.snapRetainCount=3"
  echo "autopurge.purgeInterval=1"
  if [ "$SERVER_COUNT" -gt 1 ]; then
    i=1
    while [ "$i" -le "$SERVER_COUNT" ]; do
      if [ "$i" = "$SERVER_ID" ]; then
        echo "server.$i=0.0.0.0:2888:3888"
      else
        echo "server.$i=zookeeper-$i:2888:3888"
      fi
      i=$((i + 1))
    done
  fi
} > "$cfg"
echo "$SERVER_ID" > /zookeeper/data/myid

cat > /zookeeper/conf/log4j.properties <<LOG
log4j.rootLogger=$LOG_LEVEL, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] %-5p %c{1}: %m%n
LOG

cp=""
for jar in zookeeper zookeeper-jute slf4j-api slf4j-log4j12 log4j-1.2 netty-handler netty-transport \
    netty-common netty-buffer netty-codec netty-resolver netty-transport-native-unix-common \
    netty-transport-classes-epoll metrics-core commons-cli snappy-java; do
  cp="$cp${cp:+:}/usr/share/java/$jar.jar"
done

# shellcheck disable=SC2086 # JVMFLAGS is a list of flags, as in the debezium image
exec java -Dzookeeper.log.dir=/zookeeper/logs -Dlog4j.configuration=file:/zookeeper/conf/log4j.properties \
  -Dzookeeper.admin.enableServer=false $JVMFLAGS \
  -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg"
