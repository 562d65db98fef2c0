"""The simulator's settings, read from `SIM_*` environment variables (see gatewaysim/__init__.py)."""

import binascii
import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gatewaysim.faults import SimFaults

_LOCAL_ADYEN_HMAC = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


class Account(BaseModel):
    """One gateway account: the first URL segment, with its personality, keys and webhook target."""

    personality: Literal["stripe", "adyen"]
    api_key: str
    webhook_url: str | None = None
    # Stripe-shaped: the endpoint secret (whsec_...); Adyen-shaped: the hex HMAC key.
    webhook_secret: str = ""
    settlement_currency: str | None = None
    # Adyen-shaped: basic auth for report downloads (the password defaults to the api_key).
    report_user: str = "report"
    report_password: str | None = None
    merchant_account: str = "SimMerchant"

    @model_validator(mode="after")
    def _adyen_key_is_hex(self) -> "Account":
        if self.personality == "adyen" and self.webhook_secret:
            try:
                binascii.a2b_hex(self.webhook_secret)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("an Adyen-shaped account's webhook_secret is its hex HMAC key") from exc
        return self

    @property
    def report_secret(self) -> str:
        return self.report_password if self.report_password is not None else self.api_key


class SeedPayment(BaseModel):
    account: str
    id: str
    amount: int = Field(gt=0)
    currency: str


_LOCAL_ACCOUNTS = {
    "sim": Account(personality="stripe", api_key="sk_test_sim_local", webhook_secret="whsec_sim_local"),
    "stripe": Account(personality="stripe", api_key="sk_test_stripe_local", webhook_secret="whsec_stripe_local"),
    "adyen": Account(personality="adyen", api_key="adyen_local_api_key", webhook_secret=_LOCAL_ADYEN_HMAC),
}


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIM_", env_file=None, extra="ignore")

    accounts: dict[str, Account] = _LOCAL_ACCOUNTS
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/refunds",
                              validation_alias=AliasChoices("SIM_DATABASE_URL", "DATABASE_URL"))
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    log_level: str = "INFO"
    db_pool_max: int = 8
    decline_percent: int = 2
    transient_percent: int = 0
    timeout_percent: int = 0
    async_percent: int = 0
    reverse_percent: int = 0
    fee_percent: int = 0
    fee_bps: int = 150
    latency_ms: int = 0
    confirm_after_seconds: float = 2.0
    reverse_after_seconds: float = 2.0
    timeout_hold_seconds: float = 30.0
    fx_rates: dict[str, Decimal] = {}
    fx_spread_bps: int = 0
    seed_payments: list[SeedPayment] = []
    webhook_max_attempts: int = 10
    webhook_retry_base_seconds: float = 1.0
    webhook_timeout_seconds: float = 10.0
    adyen_batch_seconds: float = 2.0
    tick_seconds: float = 0.5

    @model_validator(mode="after")
    def _seeds_name_accounts(self) -> "SimSettings":
        unknown = {seed.account for seed in self.seed_payments} - set(self.accounts)
        if unknown:
            raise ValueError(f"SIM_SEED_PAYMENTS names unknown accounts: {sorted(unknown)}")
        reserved = {"healthz", "readyz", "metrics"} & set(self.accounts)
        if reserved:
            raise ValueError(f"account names {sorted(reserved)} are the simulator's own paths")
        return self

    def faults(self) -> SimFaults:
        knobs = {f.name: getattr(self, f.name) for f in dataclasses.fields(SimFaults) if hasattr(self, f.name)}
        return SimFaults(**knobs, confirm_after=timedelta(seconds=self.confirm_after_seconds),
                         reverse_after=timedelta(seconds=self.reverse_after_seconds))
