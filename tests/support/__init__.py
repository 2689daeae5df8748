"""Helpers the tests (and the benchmarks in bench/) share: running `smsbot` as a subprocess, the Vonage emulator, a
throwaway PostgreSQL cluster, Chromium, the transcript player and the in-process bench, several instances on one
database, and nginx and Caddy run from the deploy files."""
