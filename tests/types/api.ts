// Compile-only: how a portal's TypeScript uses pkg/otaweb.js, checked by `tsc` in `make
// test` against the generated otaweb.d.ts. The `@ts-expect-error` lines are the other half:
// each must stay an error, so the types keep refusing what the API refuses.
import init, {
  EnosAgent,
  MqttClient,
  Updater,
  VerifiedImage,
  checkUrl,
  digest,
  newestImage,
  parseManifest,
  verifyImage,
  type ManifestEntry,
  type OtawebError,
  type UpdateResult,
} from "../../pkg/otaweb.js";
import type { OtaUpdater, OtaUpdaterState } from "../../www/ota-updater.js";

function isOtawebError(e: unknown): e is OtawebError {
  return e instanceof Error && e.name === "OtawebError";
}

export async function portal(bytes: Uint8Array, manifestText: string, pem: string): Promise<string> {
  await init();
  const entries: ManifestEntry[] = parseManifest(manifestText);
  checkUrl("https://updates.example.com/manifest.json");
  const entry: ManifestEntry | undefined = newestImage(manifestText, "gadget", "1") ?? entries[0];
  // @ts-expect-error: not a flow
  newestImage(manifestText, "usb");
  if (!entry) return "no gadget image";
  const described = verifyImage(bytes, entry, pem);
  const sha: string = described.sha256;
  const image = VerifiedImage.verify(bytes, JSON.stringify(entry), pem);

  const updater = await Updater.connectGadget();
  updater.addEventListener("progress", (e) => {
    const left: number | null = e.detail.secondsLeft;
    console.log(e.detail.confirmed / e.detail.total, e.detail.sent, e.detail.bytesPerSecond, left);
  });
  updater.addEventListener("version", (e) => console.log(e.detail.current, e.detail.offered));
  updater.addEventListener("error", (e) => console.log(e.detail.code, e.detail.retryable));
  updater.addEventListener("watch-error", (e) => console.log(e.detail.retryInMs));
  // @ts-expect-error: not an event the updater dispatches
  updater.addEventListener("progres", () => {});
  // @ts-expect-error: a progress detail has no `percent`
  updater.addEventListener("progress", (e) => e.detail.percent);

  try {
    const result: UpdateResult = await updater.update(image, { stageOnly: true, segmentSize: 4096 });
    if (result.outcome === "staged") await updater.apply();
    // @ts-expect-error: stageOnly is a boolean
    await updater.update(image, { stageOnly: "yes" });
    const ran = await updater.run("/firmware/manifest.json", {
      policy: { trustedKeys: [pem], allowDowngrade: false },
      autoApply: false,
      signal: new AbortController().signal,
    });
    if (ran.outcome === "update-available") return ran.offered;
    // @ts-expect-error: the policy has no `keys`
    await updater.run("/m.json", { policy: { keys: [pem] } });
    const watch = updater.watch({ source: "/firmware/manifest.json", everyMinutes: 60 });
    watch.stop();
    // @ts-expect-error: a watch needs its source
    updater.watch({ everyMinutes: 5 });
  } catch (e) {
    if (isOtawebError(e)) return `${e.code} (${e.kind}): ${e.message}`;
    throw e;
  }

  const agent = await EnosAgent.connect("wss://broker.example/mqtt", updater, {
    productKey: "pk",
    deviceKey: "dk",
    version: "1",
    deviceSecret: "secret",
    accept: "ask",
  });
  agent.addEventListener("upgrade-offered", (e) => {
    if (e.detail.firmware.fileSize < 1 << 20) agent.accept();
    else agent.decline();
  });
  agent.addEventListener("report", (e) => console.log(e.detail.step, e.detail.error?.code));
  // @ts-expect-error: an agent event, not an updater one
  agent.addEventListener("progress", () => {});
  // @ts-expect-error: accept is "ask" or "auto"
  await EnosAgent.connect("wss://b/mqtt", updater, { productKey: "p", deviceKey: "d", version: "1", accept: "always" });

  const mqtt = await MqttClient.connect("wss://broker.example/mqtt", { clientId: "c1" });
  mqtt.addEventListener("message", (e) => console.log(e.detail.topic, e.detail.text ?? e.detail.payload.length));
  const granted: number = await mqtt.subscribe("a/b", 1);
  await mqtt.publish("a/b", new Uint8Array([1]), granted);
  // @ts-expect-error: "sha1" is not a digest this API computes
  digest(bytes, "sha1");
  return sha + digest(bytes, "md5");
}

export function embed(element: OtaUpdater): void {
  element.addEventListener("state-changed", (e) => {
    const state: OtaUpdaterState = e.detail;
    console.log(state.phase, state.progress?.confirmed, state.error?.hint);
  });
  void element.run();
}
