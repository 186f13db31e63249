"""How a location is loaded and driven: loader, automation, staleness, CLI runs, launcher, loopback."""
