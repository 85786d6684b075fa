#!/usr/bin/env bash
# Make the secret files deploy/compose.yaml reads, once, on the machine that runs it:
#   deploy/secrets/generate.sh cam-line1-01 cam-line1-02 phone-gateway ...
# Each argument is a device id; it becomes an MQTT user whose password is printed once, for the device.
# Service passwords are random and stay in these files (mode 600); mosquitto_passwd hashes the MQTT ones.
# Run it again with more device ids to add devices: existing passwords are kept.
set -euo pipefail
cd "$(dirname "$0")"
umask 077

random_password() { head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32; }
keep_or_make() { [[ -s "$1" ]] || random_password > "$1"; }

if command -v mosquitto_passwd >/dev/null; then
    hash_into() { mosquitto_passwd -b mosquitto_passwd "$1" "$2"; }
else  # no local mosquitto: use the broker's image
    hash_into() {
        docker run --rm -v "$PWD:/work" -w /work eclipse-mosquitto:2.0.20 mosquitto_passwd -b mosquitto_passwd "$1" "$2"
    }
fi

keep_or_make redis_password
keep_or_make grafana_admin_password
keep_or_make mqtt_bridge_password
keep_or_make mqtt_worker_password
touch mosquitto_passwd
hash_into partsight-bridge "$(cat mqtt_bridge_password)"
hash_into partsight-worker "$(cat mqtt_worker_password)"
for device in "$@"; do
    password="$(random_password)"
    hash_into "$device" "$password"
    echo "device $device: MQTT user '$device', password '$password' (shown once)"
done
chmod 644 mosquitto_passwd  # read by the broker's own user inside its container; holds only hashes
echo "secrets in $PWD; Grafana's admin password is in grafana_admin_password"
