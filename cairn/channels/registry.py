"""Which provider serves each channel, built once per worker from the settings.

Every channel always has a provider: the configured one, else the outbox, so a journey written
for SMS runs on a laptop with no Twilio account and shows its messages in `cairn outbox`.
Providers are imported only when configured, so an unused provider's settings are never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from cairn.channels.base import AudienceSyncer, Notifier, Provider, TaskSink
from cairn.channels.local import InboxProvider, OutboxProvider
from cairn.journey import CHANNELS
from cairn.settings import Settings
from cairn.store.db import Store

if TYPE_CHECKING:
    from cairn.channels.webhook import WebhookCaller


@dataclass
class ChannelSet:
    """The providers, alert notifier, audience syncers, CRM task sink and webhook caller."""

    providers: dict[str, Provider]
    notifier: Notifier | None = None
    audiences: dict[str, AudienceSyncer] = field(default_factory=dict)
    tasks: TaskSink | None = None
    webhooks: WebhookCaller | None = None
    disabled: tuple[str, ...] = ()

    def provider(self, channel: str) -> Provider:
        return self.providers[channel]

    async def aclose(self) -> None:
        seen: set[int] = set()
        closers: list[object] = [*self.providers.values(), self.notifier, *self.audiences.values(),
                                 self.tasks, self.webhooks]
        for item in closers:
            if item is None or id(item) in seen:
                continue
            seen.add(id(item))
            close = getattr(item, "aclose", None)
            if close is not None:
                await close()


def _email(settings: Settings) -> Provider | None:
    if settings.email_provider == "smtp":
        from cairn.channels.smtp import SmtpProvider, SmtpSettings

        return SmtpProvider(SmtpSettings())
    if settings.email_provider == "postmark":
        from cairn.channels.postmark import PostmarkProvider, PostmarkSettings

        return PostmarkProvider(PostmarkSettings())
    return None


def build_channels(
    settings: Settings, store: Store, *, email: Provider | None = None,
) -> ChannelSet:
    """Providers for every channel from `settings` (outbox where none is configured).

    `email` overrides the email provider: `cairn dev` sends to its local SMTP sink.
    """
    outbox = OutboxProvider(CHANNELS)
    providers: dict[str, Provider] = dict.fromkeys(CHANNELS, outbox)
    inbox = InboxProvider(store)
    providers["in_app"] = inbox
    providers["on_site"] = inbox
    email = email or _email(settings)
    if email is not None:
        providers["email"] = email
    if "twilio" in (settings.sms_provider, settings.whatsapp_provider):
        from cairn.channels.twilio import TwilioProvider, TwilioSettings

        twilio_settings = TwilioSettings()
        if twilio_settings.status_callback_url is None:
            # Delivery receipts come back to Cairn's own endpoint unless told otherwise.
            twilio_settings = twilio_settings.model_copy(update={
                "status_callback_url":
                    f"{settings.public_url.rstrip('/')}/v1/feedback/twilio/status"})
        twilio = TwilioProvider(twilio_settings)
        if settings.sms_provider == "twilio":
            providers["sms"] = twilio
        if settings.whatsapp_provider == "twilio":
            providers["whatsapp"] = twilio
    if settings.push_provider == "fcm":
        from cairn.channels.fcm import FcmProvider, FcmSettings

        providers["push"] = FcmProvider(FcmSettings())
    if settings.web_push_provider == "webpush":
        from cairn.channels.webpush import WebPushProvider, WebPushSettings

        providers["web_push"] = WebPushProvider(WebPushSettings())
    channel_set = ChannelSet(providers=providers, disabled=tuple(settings.disabled_channels))
    if settings.notify_provider == "slack":
        from cairn.channels.slack import SlackNotifier, SlackSettings

        channel_set.notifier = SlackNotifier(SlackSettings())
    if settings.facebook_audiences:
        from cairn.channels.facebook import FacebookAudienceSyncer, FacebookSettings

        channel_set.audiences["facebook"] = FacebookAudienceSyncer(FacebookSettings())
    if settings.google_audiences:
        from cairn.channels.google_ads import GoogleAdsAudienceSyncer, GoogleAdsSettings

        channel_set.audiences["google"] = GoogleAdsAudienceSyncer(GoogleAdsSettings())
    if settings.hubspot_tasks:
        from cairn.channels.hubspot import HubSpotSettings, HubSpotTaskSink

        channel_set.tasks = HubSpotTaskSink(HubSpotSettings())
    if settings.webhooks_enabled:
        from cairn.channels.webhook import WebhookCaller, WebhookSettings

        hooks = WebhookSettings()
        if hooks.signing_secret is None:
            # Receivers check X-Cairn-Signature; without a secret of its own the workspace key
            # signs, so webhooks work from the first `cairn dev` on.
            hooks = hooks.model_copy(
                update={"signing_secret": SecretStr(settings.signing_key().decode())}
            )
        channel_set.webhooks = WebhookCaller(hooks)
    return channel_set


def local_channels(store: Store) -> ChannelSet:
    """Outbox for every channel and the inbox for in-app/on-site: tests and simulations."""
    outbox = OutboxProvider(CHANNELS)
    inbox = InboxProvider(store)
    providers: dict[str, Provider] = dict.fromkeys(CHANNELS, outbox)
    providers["in_app"] = inbox
    providers["on_site"] = inbox
    return ChannelSet(providers=providers)
