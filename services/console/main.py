"""The console process: `uvicorn services.console.main:app` (devstack runs it next to the five services)."""

from services.console.app import create_app
from services.console.settings import ConsoleSettings

settings = ConsoleSettings()
app = create_app(settings)
