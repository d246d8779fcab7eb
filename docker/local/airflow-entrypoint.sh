#!/bin/sh
# As in the official image: a command found on PATH runs as given (python, bash, stockpipe,
# jupyter); anything else is an Airflow subcommand (api-server, scheduler, ...).
if [ "$#" -gt 0 ] && command -v "$1" >/dev/null 2>&1; then
  exec "$@"
fi
exec airflow "$@"
