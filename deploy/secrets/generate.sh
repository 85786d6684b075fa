#!/usr/bin/env bash
# Make the secret files deploy/compose.yaml reads, once, on the machine that runs it:
#   deploy/secrets/generate.sh cam-line1-01 cam-line1-02 phone-gateway ...
# Each argument is a device id; it becomes an MQTT user whose password is printed once, for the device.
# Service passwords are random and stay in these files (mode 600); mosquitto_passwd hashes the MQTT ones.
# Run it again with more device ids to add devices: existing passwords are kept.
#
#   --enrol DEVICE          let DEVICE publish partsight/DEVICE/enrol (enrol products over MQTT); kept in
#                           enrol_devices, one id a line: delete a line there (or --revoke-enrol) to take it back
#   --revoke-enrol DEVICE   take that right back
#   --api-token SCOPES      add a token for the HTTP API with these scopes (recognize, enrol, admin; comma
#                           separated), printed once; the first run makes one admin token
# Every run rewrites mosquitto_acl: the shipped ../mosquitto/acl plus one stanza per device in enrol_devices.
# The broker reads it at start; after a change: docker compose -f deploy/compose.yaml kill -s SIGHUP mosquitto
# Compose mounts each file into its containers as it is (owner and mode 600 kept): run as root, this script gives
# the files partsight's containers read to their user, uid 10001 (PARTSIGHT_SECRETS_UID), and Grafana's password
# to Grafana's (472); the broker's and Redis's containers read theirs as root. Rootless podman: see deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")"
umask 077

prefix="${PARTSIGHT_TOPIC_PREFIX:-partsight}"
shipped_acl="../mosquitto/acl"
devices=()
grant=()
revoke=()
tokens=()
while (($#)); do
    case "$1" in
        --enrol | --revoke-enrol | --api-token)
            [[ $# -ge 2 ]] || { echo "$1 needs a value" >&2; exit 2; }
            case "$1" in
                --enrol) grant+=("$2") ;;
                --revoke-enrol) revoke+=("$2") ;;
                --api-token) tokens+=("$2") ;;
            esac
            shift 2
            ;;
        -*) echo "unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
        *) devices+=("$1"); shift ;;
    esac
done

# an ACL line holds the id as it is: letters, digits, '.', '_' and '-' only (no space, no wildcard, no '/')
check_id() {
    [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] || { echo "device id '$1' cannot go into the ACL" >&2; exit 2; }
}
check_scopes() {
    [[ "$1" =~ ^(recognize|enrol|admin)(,(recognize|enrol|admin))*$ ]] \
        || { echo "API token scopes '$1': a comma-separated list of recognize, enrol, admin" >&2; exit 2; }
}
for device in ${grant[@]+"${grant[@]}"} ${revoke[@]+"${revoke[@]}"}; do check_id "$device"; done
for scopes in ${tokens[@]+"${tokens[@]}"}; do check_scopes "$scopes"; done
[[ -f "$shipped_acl" ]] || { echo "the shipped ACL $shipped_acl is missing" >&2; exit 1; }

random_password() { head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32; }
keep_or_make() { [[ -s "$1" ]] || random_password > "$1"; }

if command -v mosquitto_passwd >/dev/null; then
    hash_into() { mosquitto_passwd -b mosquitto_passwd "$1" "$2"; }
else  # no local mosquitto: the broker's image (bash scripts/dev.sh images builds it), with docker or podman
    engine="$(command -v docker || command -v podman || true)"
    [[ -n "$engine" ]] || { echo "need mosquitto_passwd (apt-get install mosquitto), docker or podman" >&2; exit 1; }
    hash_into() {
        "$engine" run --rm -v "$PWD:/work" -w /work --entrypoint mosquitto_passwd \
            "${PARTSIGHT_MOSQUITTO_IMAGE:-partsight-mosquitto:latest}" -b mosquitto_passwd "$1" "$2"
    }
fi

keep_or_make redis_password
keep_or_make grafana_admin_password
keep_or_make mqtt_bridge_password
keep_or_make mqtt_worker_password
keep_or_make mqtt_api_password
keep_or_make minio_password  # MinIO's root password (compose --profile s3), the review queue's S3 secret key
touch mosquitto_passwd
hash_into partsight-bridge "$(cat mqtt_bridge_password)"
hash_into partsight-worker "$(cat mqtt_worker_password)"
hash_into partsight-api "$(cat mqtt_api_password)"
for device in ${devices[@]+"${devices[@]}"}; do
    password="$(random_password)"
    hash_into "$device" "$password"
    echo "device $device: MQTT user '$device', password '$password' (shown once)"
done
chmod 644 mosquitto_passwd  # read by the broker's own user inside its container; holds only hashes

# The HTTP API's bearer tokens: `TOKEN SCOPE[,SCOPE]` a line (PARTSIGHT_API_TOKENS_FILE)
if [[ ! -s api_tokens ]]; then
    {
        echo "# partsight API tokens: one 'TOKEN SCOPE[,SCOPE]' a line; scopes recognize, enrol, admin (admin: all)"
        echo "$(random_password) admin"
    } > api_tokens
    echo "API: an admin token is in $PWD/api_tokens"
fi
for scopes in ${tokens[@]+"${tokens[@]}"}; do
    token="$(random_password)"
    echo "$token $scopes" >> api_tokens
    echo "API token with scopes $scopes: '$token' (kept in api_tokens)"
done

# Who may enrol over MQTT, and the ACL the broker reads
touch enrol_devices
for device in ${grant[@]+"${grant[@]}"}; do
    grep -qxF "$device" enrol_devices || echo "$device" >> enrol_devices
done
for device in ${revoke[@]+"${revoke[@]}"}; do
    grep -vxF "$device" enrol_devices > enrol_devices.new || true
    mv enrol_devices.new enrol_devices
done
{
    cat "$shipped_acl"
    echo
    echo "# Enrol rights, made by deploy/secrets/generate.sh from enrol_devices (do not edit here)"
    while IFS= read -r device; do
        [[ -z "$device" || "$device" == \#* ]] && continue
        check_id "$device"
        echo "user $device"
        echo "topic write $prefix/$device/enrol"
    done < enrol_devices
} > mosquitto_acl.new
chmod 644 mosquitto_acl.new  # read by the broker's own user; holds no secret
mv mosquitto_acl.new mosquitto_acl

# The readers' own files (mode 600): partsight's images run as uid 10001, Grafana's as 472
service_uid="${PARTSIGHT_SECRETS_UID:-10001}"
service_files=(redis_password mqtt_bridge_password mqtt_worker_password mqtt_api_password api_tokens minio_password)
if [[ "$(id -u)" == 0 ]]; then
    chown "$service_uid:$service_uid" "${service_files[@]}"
    chown 472:472 grafana_admin_password
elif [[ "$(stat -c %u redis_password)" != "$service_uid" ]]; then
    echo "note: partsight's containers (uid $service_uid) read these files as they are:" \
        "sudo chown $service_uid:$service_uid ${service_files[*]} (in $PWD); sudo chown 472:472 grafana_admin_password"
fi
granted="$(grep -v '^#' enrol_devices | paste -sd ' ' - || true)"
echo "MQTT enrolment allowed to: ${granted:-no device}"
echo "secrets in $PWD; Grafana's admin password is in grafana_admin_password"
