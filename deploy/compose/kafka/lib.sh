# Sourced by broker.sh and init.sh (POSIX sh, as in the apache/kafka image). KAFKA_HOME and KAFKA_RUN_DIR
# default to the image's Kafka and a writable dir; tests/integration/test_compose_kafka.py points them elsewhere.
bin=${KAFKA_HOME:-/opt/kafka}/bin
run_dir=${KAFKA_RUN_DIR:-/tmp}
SCRAM=SCRAM-SHA-512
ADMIN=admin
umask 077  # the files written here hold passwords

# The password in the variable named $1. It goes inside JAAS quotes and the brackets of `--add-scram` and
# `--add-config`, so it is limited to characters none of them would need escaped.
password_of() {
    eval "value=\${$1:-}"
    case $value in
        '' | *[!A-Za-z0-9._~-]*) echo "$1 must be set, to letters, digits and . _ ~ - only" >&2; exit 1 ;;
    esac
    printf '%s' "$value"
}

admin_password=$(password_of KAFKA_PASSWORD_ADMIN)
admin_login="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$ADMIN\" password=\"$admin_password\";"
# The admin's client config, for kafka-topics, kafka-configs, kafka-acls and the broker's healthcheck.
printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=%s\nsasl.jaas.config=%s\n' "$SCRAM" "$admin_login" \
    > "$run_dir/admin.properties"
