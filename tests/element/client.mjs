// An Element-grade Matrix client for the test suite.
//
// Element (Web, and X through matrix-rust-sdk) encrypts with the Rust crypto stack; this CLI
// drives the same stack through matrix-js-sdk so that tests see what an Element user sees.
// It logs one new device in with a password, keeps its crypto state in memory for the life of
// the process, and talks JSON lines: commands on stdin ({"id": 1, "cmd": "send", ...}), answers
// and unsolicited events on stdout ({"id": 1, "ok": true, "result": ...}, {"event": ...}).
// Everything the SDK logs goes to stderr.
//
//   node client.mjs <homeserver> <user_id> <password>

import readline from "node:readline";

// The SDK logs through console.log/info/debug: keep stdout for the protocol.
for (const name of ["log", "info", "debug", "warn", "trace"]) {
    console[name] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

const sdk = await import("matrix-js-sdk");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
// The package Element Web encrypts attachments with (AES-CTR, SHA-256 of the ciphertext).
const attachments = (await import("matrix-encrypt-attachment")).default;
logger.setLevel(process.env.ELEMENT_CLIENT_LOG ?? "warn");

const [homeserver, userId, password] = process.argv.slice(2);
if (!password) {
    process.stderr.write("usage: node client.mjs <homeserver> <user_id> <password>\n");
    process.exit(2);
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

const login = await sdk.createClient({ baseUrl: homeserver }).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: userId },
    password,
    initial_device_display_name: "element-grade test client",
});
const client = sdk.createClient({
    baseUrl: homeserver,
    userId: login.user_id,
    deviceId: login.device_id,
    accessToken: login.access_token,
});
await client.initRustCrypto({ useIndexedDB: false });
const crypto = client.getCrypto();

// The password answers the interactive-auth step of a cross-signing upload.
const uia = async (makeRequest) => {
    await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: userId },
        password,
    });
};

async function describe(event) {
    const content = event.getContent();
    const out = {
        event: "message",
        room_id: event.getRoomId(),
        event_id: event.getId(),
        sender: event.getSender(),
        type: event.getType(),
        encrypted: event.isEncrypted(),
        body: content.body ?? "",
        msgtype: content.msgtype ?? "",
        content,
        // Whether Element would highlight it for this user (a ping), by its push rules.
        highlight: Boolean(client.getPushActionsForEvent(event, true)?.tweaks?.highlight),
    };
    if (event.isDecryptionFailure()) {
        out.event = "undecryptable";
        out.code = event.decryptionFailureReason;
    } else if (event.isEncrypted()) {
        const info = await crypto.getEncryptionInfoForEvent(event);
        out.shield = info ? cryptoApi.EventShieldColour[info.shieldColour] : null;
        out.shield_reason =
            info && info.shieldReason !== null
                ? cryptoApi.EventShieldReason[info.shieldReason]
                : null;
    }
    return out;
}

// Every timeline event, once its decryption settled (a later success is reported again).
const reported = new Map();
async function report(event) {
    if (event.isBeingDecrypted() || event.shouldAttemptDecryption()) return;
    const type = event.getType();
    if (type !== "m.room.message" && type !== "m.room.encrypted") return;
    const described = await describe(event);
    const key = `${described.event}:${described.code ?? ""}`;
    if (reported.get(event.getId()) === key) return;
    reported.set(event.getId(), key);
    emit(described);
}
client.on(sdk.RoomEvent.Timeline, (event) => void report(event));
client.on(sdk.MatrixEventEvent.Decrypted, (event) => void report(event));
client.on(sdk.RoomMemberEvent.Membership, (event, member) => {
    if (member.userId === client.getUserId() && member.membership === "invite") {
        client.joinRoom(member.roomId).catch((err) => emit({ event: "error", error: String(err) }));
    }
});

function formatted(html) {
    return html === null ? {} : { format: "org.matrix.custom.html", formatted_body: html };
}

function pinged(userIds) {
    return userIds.length ? { user_ids: userIds } : {};
}

function attachThread(content, threadRoot) {
    if (threadRoot) {
        content["m.relates_to"] = {
            rel_type: "m.thread",
            event_id: threadRoot,
            is_falling_back: true,
            "m.in_reply_to": { event_id: threadRoot },
        };
    }
}

// Bytes encrypted and uploaded as Element's uploadFile does; the `file` object of an event.
async function upload(plain) {
    const { data: ciphertext, info: key } = await attachments.encryptAttachment(
        plain.buffer.slice(plain.byteOffset, plain.byteOffset + plain.byteLength),
    );
    const { content_uri: url } = await client.uploadContent(new Blob([ciphertext]), {
        includeFilename: false,
        type: "application/octet-stream",
    });
    return { ...key, url };
}

// Width and height from a PNG's IHDR chunk (Element reads them from the decoded image).
function pngSize(bytes) {
    const signature = "89504e470d0a1a0a";
    if (bytes.length < 24 || bytes.subarray(0, 8).toString("hex") !== signature) return null;
    return { w: bytes.readUInt32BE(16), h: bytes.readUInt32BE(20) };
}

const commands = {
    // Cross-signing as a fresh Element login sets it up (reset: a new identity).
    async bootstrap({ reset = false }) {
        await crypto.bootstrapCrossSigning({
            setupNewCrossSigning: reset,
            authUploadDeviceSigningKeys: uia,
        });
        return {
            ready: await crypto.isCrossSigningReady(),
            master: await crypto.getCrossSigningKeyId(cryptoApi.CrossSigningKey.Master),
        };
    },
    // Sign another device of this account, as "verify this session" does in Element.
    async cross_sign({ device_id }) {
        await crypto.crossSignDevice(device_id);
        return device_id;
    },
    // Element's "Never send encrypted messages to unverified sessions".
    async verified_only({ on }) {
        crypto.globalBlacklistUnverifiedDevices = on;
        return on;
    },
    // "strict": Element's "exclude insecure devices"; "legacy": share with every device.
    async mode({ mode }) {
        crypto.setDeviceIsolationMode(
            mode === "strict"
                ? new cryptoApi.OnlySignedDevicesIsolationMode()
                : new cryptoApi.AllDevicesIsolationMode(false),
        );
        return mode;
    },
    // The member's display name, as set in Element's settings; answered once this client
    // sees it in the room (its push rules match it from then on).
    async set_name({ room_id, name }) {
        await client.setDisplayName(name);
        const shown = () => client.getRoom(room_id)?.getMember(client.getUserId())?.name === name;
        await new Promise((resolve) => {
            const check = () => {
                if (!shown()) return;
                client.off(sdk.RoomMemberEvent.Name, check);
                resolve();
            };
            client.on(sdk.RoomMemberEvent.Name, check);
            check();
        });
        return name;
    },
    async join({ room_id }) {
        await client.joinRoom(room_id);
        return room_id;
    },
    // A message as Element's composer sends it: the plain body, the HTML when there is
    // formatting, and always `m.mentions` (the users its pills name, else empty). A reply
    // names the event it answers without quoting it (Element dropped the fallback, MSC2781)
    // and mentions that event's sender, as Element does.
    async send({ room_id, body, html = null, mentions = [], thread_root = null, reply_to = null }) {
        const content = { msgtype: "m.text", body, ...formatted(html) };
        attachThread(content, thread_root);
        if (reply_to) {
            const answered = client.getRoom(room_id)?.findEventById(reply_to)?.getSender();
            if (answered && answered !== client.getUserId()) mentions = [...mentions, answered];
            content["m.relates_to"] = { ...content["m.relates_to"], "m.in_reply_to": { event_id: reply_to } };
        }
        content["m.mentions"] = pinged(mentions);
        return (await client.sendEvent(room_id, "m.room.message", content)).event_id;
    },
    // An edit as Element's EditMessageComposer shapes it: " * " before the fallback body and
    // HTML, the new content whole in `m.new_content`, `m.relates_to` an `m.replace`.
    async edit({ room_id, event_id, body, html = null, mentions = [] }) {
        const newContent = { msgtype: "m.text", body, ...formatted(html), "m.mentions": pinged(mentions) };
        const content = {
            msgtype: "m.text",
            body: ` * ${body}`,
            ...formatted(html === null ? null : ` * ${html}`),
            "m.new_content": newContent,
            "m.relates_to": { rel_type: "m.replace", event_id },
            "m.mentions": pinged(mentions),
        };
        return (await client.sendEvent(room_id, "m.room.message", content)).event_id;
    },
    async redact({ room_id, event_id, reason = undefined }) {
        return (await client.redactEvent(room_id, event_id, undefined, { reason })).event_id;
    },
    async react({ room_id, event_id, key }) {
        const content = { "m.relates_to": { rel_type: "m.annotation", event_id, key } };
        return (await client.sendEvent(room_id, "m.reaction", content)).event_id;
    },
    // A file as Element Web's ContentMessages sends it into an encrypted room: encrypted by
    // matrix-encrypt-attachment, the ciphertext uploaded as application/octet-stream without
    // a name, the key, iv and hash in `file`; `info` with the size and MIME type, and for an
    // image `m.image` with its width and height. Above 32 KiB Element adds a thumbnail it
    // draws on a canvas, encrypted and uploaded the same way (`info.thumbnail_file`); Node has
    // no canvas, so the test hands one in. (Element's blurhash, drawn too, is left out.)
    // A caption is sent as Element X (and Element Web with captions) does: `body` the caption,
    // `filename` the file's name.
    async send_file({ room_id, name, mimetype, data, caption = null, html = null, thumbnail = null, thread_root = null }) {
        const plain = Buffer.from(data, "base64");
        const content = { body: name, info: { size: plain.length }, msgtype: "m.file", "m.mentions": {} };
        if (mimetype) content.info.mimetype = mimetype;
        const size = mimetype === "image/png" ? pngSize(plain) : null;
        if (size) {
            content.msgtype = "m.image";
            Object.assign(content.info, size);
        }
        if (thumbnail !== null) {
            const small = Buffer.from(thumbnail, "base64");
            content.info.thumbnail_info = { ...pngSize(small), mimetype: "image/png", size: small.length };
            content.info.thumbnail_file = await upload(small);
        }
        content.file = await upload(plain);
        if (caption !== null) Object.assign(content, { body: caption, filename: name, ...formatted(html) });
        attachThread(content, thread_root);
        return (await client.sendEvent(room_id, "m.room.message", content)).event_id;
    },
    // A file of an event's `file` object, downloaded over authenticated media as Element
    // does and decrypted (the SHA-256 of the ciphertext checked first); its bytes in base64.
    // In a browser the package imports the key through WebCrypto, which refuses a JWK whose
    // kty, alg, key_ops or ext is off; in Node it does not, so the key is imported here
    // the same way first.
    async download_file({ file }) {
        await globalThis.crypto.subtle.importKey("jwk", file.key, { name: "AES-CTR" }, false, [
            "encrypt",
            "decrypt",
        ]);
        const http = client.mxcUrlToHttp(file.url, undefined, undefined, undefined, false, true, true);
        const res = await fetch(http, { headers: { Authorization: `Bearer ${client.getAccessToken()}` } });
        if (!res.ok) throw new Error(`download of ${file.url}: HTTP ${res.status}`);
        const plain = await attachments.decryptAttachment(await res.arrayBuffer(), file);
        return Buffer.from(plain).toString("base64");
    },
    // An event as Element shows it: its content after any edit it accepted, and by whom
    // (with `edited`, answered once an edit is accepted).
    async shown({ room_id, event_id, edited = false }) {
        const event = client.getRoom(room_id)?.findEventById(event_id);
        if (!event) return null;
        if (edited && !event.replacingEvent()) {
            await new Promise((resolve) => event.once(sdk.MatrixEventEvent.Replaced, resolve));
        }
        const edit = event.replacingEvent();
        return { content: event.getContent(), edited_by: edit ? edit.getSender() : null };
    },
    // How this client sees another device: signed by its owner, verified by us.
    async device({ user_id, device_id }) {
        await crypto.getUserDeviceInfo([user_id], true);
        const status = await crypto.getDeviceVerificationStatus(user_id, device_id);
        if (status === null) return null;
        return {
            signed_by_owner: status.signedByOwner,
            cross_signing_verified: status.crossSigningVerified,
            locally_verified: status.localVerified,
        };
    },
    async identity({ user_id }) {
        const has = await crypto.userHasCrossSigningKeys(user_id, true);
        const status = await crypto.getUserVerificationStatus(user_id);
        return { has_cross_signing: has, needs_approval: status.needsUserApproval };
    },
    async whoami() {
        return { user_id: client.getUserId(), device_id: client.getDeviceId() };
    },
    async stop() {
        client.stopClient();
        setImmediate(() => process.exit(0));
        return true;
    },
};

await client.startClient({ initialSyncLimit: 20 });
await new Promise((resolve) => {
    const check = (state) => {
        if (state === "PREPARED" || state === "SYNCING") {
            client.off(sdk.ClientEvent.Sync, check);
            resolve();
        }
    };
    client.on(sdk.ClientEvent.Sync, check);
});
emit({ event: "ready", user_id: client.getUserId(), device_id: client.getDeviceId() });

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
    if (!line.trim()) continue;
    let request;
    try {
        request = JSON.parse(line);
    } catch (err) {
        emit({ event: "error", error: `not JSON: ${err}` });
        continue;
    }
    const handler = commands[request.cmd];
    if (!handler) {
        emit({ id: request.id, ok: false, error: `unknown command ${request.cmd}` });
        continue;
    }
    handler(request)
        .then((result) => emit({ id: request.id, ok: true, result }))
        .catch((err) => emit({ id: request.id, ok: false, error: String(err?.stack ?? err) }));
}
client.stopClient();
process.exit(0);
