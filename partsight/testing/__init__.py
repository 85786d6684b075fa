"""What the test suite and the benchmarks share: real Mosquitto and Redis servers on free ports, partsight's own
processes, a deployment of bridge and worker, MQTT listeners, metric scraping, the fault matrix and the bad-input
corpus. One home, so a benchmark measures exactly what the tests check."""
