"""What every command shares: config, models, generation engine, run folders, audio, console.
Nothing here imports a command or the CLI."""
