"""The control-plane database: schema, queries, migrations, and the views the CLI and API show."""
