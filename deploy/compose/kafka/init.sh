#!/bin/sh
# compose's kafka-init (one-shot, once the broker is healthy), as the admin: the contract topics
# (topics.sh), then per principal of shared/runtime/kafka_auth.py ACCESS its SCRAM-SHA-512 user and ACLs
# (access.sh, generated from that table). Each step is idempotent and runs on every `up`: a changed
# password takes effect; an ACL dropped from the table stays until the broker is recreated.
set -eu
here=$(dirname "$0")
. "$here/lib.sh"
bootstrap=${BOOTSTRAP:-kafka:9092}
client=$run_dir/admin.properties

create() {  # topic partitions [--config key=value]...
    topic=$1 partitions=$2
    shift 2
    "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$client" --create --if-not-exists \
        --topic "$topic" --partitions "$partitions" --replication-factor 1 "$@"
}

user() {  # principal, the variable holding its password
    password=$(password_of "$2")
    "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --command-config "$client" --alter \
        --entity-type users --entity-name "$1" --add-config "$SCRAM=[password=$password]"
}

acl() {  # kafka-acls --add arguments
    "$bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --command-config "$client" --add "$@"
}

. "$here/topics.sh"
. "$here/access.sh"
