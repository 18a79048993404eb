"""One module per `lift3d` subcommand (see `lift3d.cli`)."""
