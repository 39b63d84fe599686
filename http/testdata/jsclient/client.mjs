// Drives a running profilestore with the real matrix-js-sdk, as Element
// does. http/jsclient_test.go starts the server and runs this with
//   PROFILESTORE_URL, ALICE, ALICE_TOKEN, BOB_TOKEN
// in the environment. Every check that fails is printed; the exit code is
// the number of failures (0 = all passed).
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("error");

const baseUrl = process.env.PROFILESTORE_URL;
const alice = process.env.ALICE;
const aliceToken = process.env.ALICE_TOKEN;
const bobToken = process.env.BOB_TOKEN;
if (!baseUrl || !alice || !aliceToken || !bobToken) {
    console.error("set PROFILESTORE_URL, ALICE, ALICE_TOKEN and BOB_TOKEN");
    process.exit(100);
}

let failures = 0;
let passed = 0;

async function check(name, fn) {
    try {
        await fn();
        passed++;
        console.log(`ok   ${name}`);
    } catch (err) {
        failures++;
        console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
    }
}

function equal(got, want, what) {
    const g = JSON.stringify(got);
    const w = JSON.stringify(want);
    if (g !== w) {
        throw new Error(`${what}: got ${g}, want ${w}`);
    }
}

// expectMatrixError runs fn and requires the SDK's MatrixError with the
// status and errcode.
async function expectMatrixError(fn, status, errcode) {
    let err;
    try {
        await fn();
    } catch (e) {
        err = e;
    }
    if (!err) {
        throw new Error(`expected ${status} ${errcode}, the call succeeded`);
    }
    if (!(err instanceof sdk.MatrixError)) {
        throw new Error(`expected a MatrixError ${status} ${errcode}, got ${err}`);
    }
    equal(err.httpStatus, status, "HTTP status");
    equal(err.errcode, errcode, "errcode");
}

const client = sdk.createClient({ baseUrl, accessToken: aliceToken, userId: alice });

await check("the server advertises extended profiles", async () => {
    equal(await client.doesServerSupportExtendedProfiles(), true, "doesServerSupportExtendedProfiles");
    equal(await client.doesServerSupportUnstableFeature("uk.tcpip.msc4133.stable"), true, "stable prefix");
});

await check("display name: set and read back", async () => {
    await client.setDisplayName("Alice from matrix-js-sdk");
    const info = await client.getProfileInfo(alice, "displayname");
    equal(info.displayname, "Alice from matrix-js-sdk", "displayname");
});

await check("avatar: set and read back", async () => {
    await client.setAvatarUrl("mxc://example.com/jsAvatar1");
    const info = await client.getProfileInfo(alice);
    equal(info.avatar_url, "mxc://example.com/jsAvatar1", "avatar_url");
    equal(info.displayname, "Alice from matrix-js-sdk", "displayname beside it");
});

await check("extended profile: set and get a custom key and m.tz", async () => {
    await client.setExtendedProfileProperty("org.example.languages", ["en", "fr"]);
    await client.setExtendedProfileProperty("m.tz", "Europe/London");
    equal(await client.getExtendedProfileProperty(alice, "org.example.languages"), ["en", "fr"], "custom key");
    equal(await client.getExtendedProfileProperty(alice, "m.tz"), "Europe/London", "m.tz");
    const profile = await client.getExtendedProfile(alice);
    equal(profile["org.example.languages"], ["en", "fr"], "custom key in the whole profile");
    equal(profile["m.tz"], "Europe/London", "m.tz in the whole profile");
    equal(profile.displayname, "Alice from matrix-js-sdk", "displayname in the whole profile");
});

await check("extended profile: a non-string m.tz is refused and changes nothing", async () => {
    await expectMatrixError(() => client.setExtendedProfileProperty("m.tz", 60), 400, "M_INVALID_PARAM");
    equal(await client.getExtendedProfileProperty(alice, "m.tz"), "Europe/London", "m.tz after the refusal");
});

await check("extended profile: delete, then the key is 404", async () => {
    await client.deleteExtendedProfileProperty("org.example.languages");
    await expectMatrixError(() => client.getExtendedProfileProperty(alice, "org.example.languages"), 404, "M_NOT_FOUND");
    const profile = await client.getExtendedProfile(alice);
    equal("org.example.languages" in profile, false, "deleted key in the whole profile");
});

await check("directory search finds the new name", async () => {
    const found = await client.searchUserDirectory({ term: "matrix-js", limit: 5 });
    equal(found.limited, false, "limited");
    equal(found.results.map((r) => r.user_id), [alice], "results");
    equal(found.results[0].display_name, "Alice from matrix-js-sdk", "display_name");
});

await check("another user's profile is 403 M_FORBIDDEN", async () => {
    // Bob's token, claiming to write Alice's profile.
    const impostor = sdk.createClient({ baseUrl, accessToken: bobToken, userId: alice });
    await expectMatrixError(() => impostor.setDisplayName("Not Alice"), 403, "M_FORBIDDEN");
    await expectMatrixError(() => impostor.setExtendedProfileProperty("org.example.x", "y"), 403, "M_FORBIDDEN");
    const info = await client.getProfileInfo(alice, "displayname");
    equal(info.displayname, "Alice from matrix-js-sdk", "displayname after the refusals");
});

await check("an unknown user's profile is 404 M_NOT_FOUND", async () => {
    await expectMatrixError(() => client.getProfileInfo("@nobody:example.com"), 404, "M_NOT_FOUND");
    await expectMatrixError(() => client.getExtendedProfile("@nobody:example.com"), 404, "M_NOT_FOUND");
});

await check("a bad token is 401 M_UNKNOWN_TOKEN", async () => {
    const stranger = sdk.createClient({ baseUrl, accessToken: "not-a-token", userId: alice });
    await expectMatrixError(() => stranger.setDisplayName("x"), 401, "M_UNKNOWN_TOKEN");
});

console.log(`${passed} passed, ${failures} failed`);
process.exit(failures);
