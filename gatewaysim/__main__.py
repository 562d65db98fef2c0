"""`python -m gatewaysim`: serve gatewaysim.main:app with uvicorn on SIM_HTTP_HOST:SIM_HTTP_PORT."""

import uvicorn

from gatewaysim.settings import SimSettings

if __name__ == "__main__":
    settings = SimSettings()
    # A held `sim-timeout` answer must not keep a stopping simulator alive for long.
    uvicorn.run("gatewaysim.main:app", host=settings.http_host, port=settings.http_port,
                log_level=settings.log_level.lower(), access_log=False, timeout_graceful_shutdown=5)
