"""The front door from prompts to completions, shared by the API, the server, the apps, structured
output and the harness: one seed rule (`prompts`) and one way to run requests to the end (`run`)."""
