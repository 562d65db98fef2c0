#!/bin/sh
# Entrypoint of compose's kafka container (apache/kafka image): SASL_PLAINTEXT with SCRAM-SHA-512 and the
# StandardAuthorizer (server.properties). The image's own entrypoint formats the log dir without SCRAM
# users, and KRaft keeps SCRAM users in the metadata log: the admin, the super user init.sh creates
# everyone else with, must be written there when the dir is formatted, so this script formats it.
set -eu
here=$(dirname "$0")
. "$here/lib.sh"
config=$run_dir/server.properties
{
    cat "$here/server.properties"
    echo "listener.name.internal.scram-sha-512.sasl.jaas.config=$admin_login"
    echo "listener.name.host.scram-sha-512.sasl.jaas.config=$admin_login"
} > "$config"
# A restarted container keeps its formatted dir (and its topics); a recreated one starts empty.
"$bin/kafka-storage.sh" format --ignore-formatted --cluster-id "${CLUSTER_ID:?}" --config "$config" \
    --add-scram "$SCRAM=[name=$ADMIN,password=$admin_password]"
exec "$bin/kafka-server-start.sh" "$config"
