//! Dashboard sessions on `/auth/*`: the refresh token only ever in an
//! HttpOnly cookie, rotated once per use, and every CSRF guard refusing.

use ferrite_e2e::{ADMIN_PASSWORD, Backend, TestApp, on_both_backends};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

on_both_backends!(a_cookie_session_rotates_refuses_replays_and_ends_at_logout);

/// `ferrite_refresh=…` from a response's Set-Cookie, with its attributes.
fn set_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ferrite_refresh="))
        .expect("a ferrite_refresh cookie")
        .to_owned()
}

fn value_of(cookie: &str) -> &str {
    cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, value)| value)
        .unwrap_or_default()
}

async fn a_cookie_session_rotates_refuses_replays_and_ends_at_logout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let post = |path: &str, cookie: Option<&str>, marked: bool, origin: Option<&str>| {
        let mut request = app
            .client
            .post(app.url(path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string());
        if marked {
            request = request.header("ferrite-session", "1");
        }
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, format!("ferrite_refresh={cookie}"));
        }
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.send()
    };

    // CSRF guards: no marker header, or another site's Origin.
    let unmarked = post("/auth/login", None, false, None).await.unwrap();
    assert_eq!(unmarked.status(), StatusCode::BAD_REQUEST);
    let foreign = post("/auth/login", None, true, Some("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);

    let own_origin = format!("http://{}", app.addr);
    let login = post("/auth/login", None, true, Some(&own_origin))
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = set_cookie(&login);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/auth", "Max-Age="] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing in {cookie}"
        );
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let first = value_of(&cookie).to_owned();
    let body: Value = login.json().await.unwrap();
    assert!(body["accessToken"].as_str().is_some());
    assert!(
        body.get("refreshToken").is_none(),
        "the body holds no refresh token"
    );
    assert_eq!(body["user"]["role"], "ADMIN");

    // Behind a TLS-terminating proxy the cookie is Secure.
    let proxied = app
        .client
        .post(app.url("/auth/refresh"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("ferrite-session", "1")
        .header("x-forwarded-proto", "https")
        .header(header::COOKIE, format!("ferrite_refresh={first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::OK);
    let second_cookie = set_cookie(&proxied);
    assert!(second_cookie.contains("Secure"), "{second_cookie}");
    let second = value_of(&second_cookie).to_owned();
    assert_ne!(first, second);

    // The rotated-away cookie again: a replay, so the session is revoked.
    let replay = post("/auth/refresh", Some(&first), true, None)
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookie(&replay).contains("Max-Age=0"),
        "the cookie is cleared"
    );
    let revoked = post("/auth/refresh", Some(&second), true, None)
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);

    // No cookie at all: nothing to refresh.
    let none = post("/auth/refresh", None, true, None).await.unwrap();
    assert_eq!(none.status(), StatusCode::NO_CONTENT);

    // Sign out ends a fresh session.
    let login = post("/auth/login", None, true, None).await.unwrap();
    let third = value_of(&set_cookie(&login)).to_owned();
    let logout = post("/auth/logout", Some(&third), true, None)
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    let after = post("/auth/refresh", Some(&third), true, None)
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}
