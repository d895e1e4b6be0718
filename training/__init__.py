"""Training package: turns a folder of labelled car photos into the artifact the web app loads."""
