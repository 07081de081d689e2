"""The clouds' agent instances, started for a call and stopped with the settings given: ZEGO's
(channeld's agent registered once per process, each instance bringing its own LLM settings) and
Alibaba's (in an RTC channel Alibaba creates, or in the app's own)."""

from __future__ import annotations

import contextlib
from typing import Any

from channels.live import ChannelRuntime
from channels.voice import aliyun, zego
from channels.voice.config import AliyunVoice, VoiceConfig, ZegoVoice
from channels.voice.endpoint import user_data
from channels.voice.requests import AliyunJoin, StartCall
from common.errors import ConfigError
from storage.repository import VoiceCallRecord


class CloudAgents:
    """Starts and stops the clouds' agent instances; every request within `timeout` seconds."""

    def __init__(self, *, user_data_key: bytes, timeout: float) -> None:
        self._key = user_data_key
        self._timeout = timeout
        self._registered: set[tuple[str, int, str]] = set()  # (api_base, app, agent) known

    async def start(
        self,
        runtime: ChannelRuntime,
        voice: VoiceConfig,
        call: VoiceCallRecord,
        secret: str,
        start: StartCall,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(instance id, details kept with the call, fields returned once: tokens)."""
        if start.provider == "zego" and voice.zego is not None:
            return await self._start_zego(
                runtime=runtime,
                voice=voice,
                config=voice.zego,
                call=call,
                secret=secret,
                start=start,
            )
        if start.provider == "aliyun" and voice.aliyun is not None:
            return await self._start_aliyun(voice, voice.aliyun, call, start)
        raise ConfigError(f"{start.provider} is not configured")

    async def stop(self, section: ZegoVoice | AliyunVoice, instance: str) -> None:
        """Stops the instance on the cloud `section` configures."""
        if isinstance(section, ZegoVoice):
            async with contextlib.aclosing(self.zego_api(section)) as zego_api:
                await zego_api.delete_instance(instance)
        else:
            async with contextlib.aclosing(self.aliyun_api(section)) as aliyun_api:
                await aliyun_api.stop_instance(instance)

    def zego_api(self, config: ZegoVoice) -> zego.ZegoAgentApi:
        """A client of ZEGO's server API with these settings; the caller closes it."""
        return zego.ZegoAgentApi(
            app_id=config.app_id,
            server_secret=config.server_secret.get_secret_value(),
            api_base=config.api_base,
            timeout=self._timeout,
        )

    def aliyun_api(self, config: AliyunVoice) -> aliyun.AliyunVoiceApi:
        """A client of Alibaba's IMS API with these settings; the caller closes it."""
        return aliyun.AliyunVoiceApi(
            access_key_id=config.access_key_id,
            access_key_secret=config.access_key_secret.get_secret_value(),
            region=config.region,
            endpoint=config.endpoint,
            timeout=self._timeout,
        )

    async def _start_zego(
        self,
        *,
        runtime: ChannelRuntime,
        voice: VoiceConfig,
        config: ZegoVoice,
        call: VoiceCallRecord,
        secret: str,
        start: StartCall,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        join = start.zego
        if join is None:
            raise ConfigError("a ZEGO call needs its room and stream ids")
        llm: dict[str, Any] = {
            "Url": voice.endpoint_url(call.channel_id),
            "ApiKey": secret,
            "Model": runtime.agent.name,
            "AddAgentInfo": True,
            "AgentExtraInfo": {"call": call.id},
        }
        async with contextlib.aclosing(self.zego_api(config)) as api:
            key = (config.api_base, config.app_id, config.agent_id)
            if key not in self._registered:
                # the registered agent's LLM is a placeholder: every instance brings its own
                await api.register_agent(
                    config.agent_id,
                    name="channeld",
                    llm={**llm, "ApiKey": "per-instance", "AgentExtraInfo": {}},
                    tts=config.tts_object(),
                    asr=config.asr_object(),
                )
                self._registered.add(key)
            instance = await api.create_instance(
                agent_id=config.agent_id,
                user_id=join.user_id,
                rtc={
                    "RoomId": join.room_id,
                    "AgentStreamId": join.agent_stream_id,
                    "AgentUserId": join.agent_user_id,
                    "UserStreamId": join.user_stream_id,
                },
                llm=llm,
                tts=config.tts_object(),
                asr=config.asr_object(),
                # the history is channeld's: ZEGO keeps only a short window of its own, and no
                # ZIM sync (which would store a second copy of the call)
                message_history={"SyncMode": 1, "Messages": [], "WindowSize": config.window_size},
                callback_config={"Interrupted": 1},
            )
        details = {"agent_instance_id": instance, "zego": join.model_dump()}
        return instance, details, {}

    async def _start_aliyun(
        self, voice: VoiceConfig, config: AliyunVoice, call: VoiceCallRecord, start: StartCall
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        async with contextlib.aclosing(self.aliyun_api(config)) as api:
            return await self._start_aliyun_on(api, voice, config, call, start)

    async def _start_aliyun_on(
        self,
        api: aliyun.AliyunVoiceApi,
        voice: VoiceConfig,
        config: AliyunVoice,
        call: VoiceCallRecord,
        start: StartCall,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        data = user_data(self._key, call.channel_id, call.id)
        join = start.aliyun or AliyunJoin()
        if join.runtime is not None:
            # the app manages RTC itself: it gives the channel, the agent's user and its token
            instance = await api.start_instance(
                agent_id=config.agent_id,
                session_id=call.conversation_id,
                user_data=data,
                runtime={
                    "ChannelId": join.runtime.channel_id,
                    "AgentUserId": join.runtime.agent_user_id,
                    "AuthToken": join.runtime.auth_token.get_secret_value(),
                },
            )
            return instance, {"instance_id": instance, "call_type": join.call_type}, {}
        joined = await api.generate_call(
            agent_id=config.agent_id,
            session_id=call.conversation_id,
            user_id=f"u{call.id[:31]}",
            user_data=data,
            expire_seconds=voice.max_call_seconds,
        )
        details = {
            "call_type": join.call_type,
            "instance_id": joined.instance_id,
            "rtc_channel_id": joined.rtc_channel_id,
            "rtc_user_id": joined.rtc_user_id,
            "agent_user_id": joined.agent_user_id,
        }
        # the join token is the app's: returned once, never stored
        return joined.instance_id, details, {"rtc_join_token": joined.rtc_join_token}
