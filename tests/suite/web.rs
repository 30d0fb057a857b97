//! The pages as served: embedded assets under a strict Content-Security-Policy, no caching,
//! no framing, and CSRF protection of a browser's state-changing requests (the browser
//! scenarios themselves are in `browser.rs`).

use crate::support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{DESK_A, DESK_B, Gateway};

#[tokio::test]
async fn pages_and_assets_are_embedded_and_served_under_a_strict_policy() {
    let gateway = Gateway::start();
    let client = gateway.client(Some(DESK_A));
    for (path, kind, needle) in [
        ("/", "text/html", "/assets/app.js"),
        ("/assets/app.js", "text/javascript", "EventSource"),
        ("/assets/common.js", "text/javascript", "x-csrf-token"),
        ("/conformite", "text/html", "/assets/compliance.js"),
        (
            "/assets/compliance.js",
            "text/javascript",
            "/api/v1/compliance/pending",
        ),
        ("/assets/app.css", "text/css", "--ink"),
        ("/assets/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = client.get(gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("http"),
            "{csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        // Nothing is fetched from elsewhere (the icon's only URL is its XML namespace).
        let foreign = body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !foreign.contains("http://") && !foreign.contains("https://"),
            "{path}"
        );
    }
    let html = client
        .get(gateway.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline code"
    );
    assert!(html.contains("lang=\"fr\""));
}

#[tokio::test]
async fn a_browser_request_changing_state_needs_the_token_of_its_own_desk() {
    let gateway = Gateway::start();
    let client = gateway.client(Some(DESK_A));
    let (_, body) = support::get_json(&client, &gateway.url("/api/v1/csrf-token")).await;
    let token = body["token"].as_str().unwrap().to_owned();
    let (_, other) = support::get_json(
        &gateway.client(Some(DESK_B)),
        &gateway.url("/api/v1/csrf-token"),
    )
    .await;
    assert_ne!(other["token"], body["token"], "bound to the desk");
    let origin = gateway.url("");
    let logout = |headers: Vec<(&'static str, String)>| {
        let mut request = client.delete(gateway.url("/api/v1/session"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // A browser (it sends Origin or Sec-Fetch-Site) without the token, with another
    // desk's token, or from another site: refused before the handler.
    for headers in [
        vec![("origin", origin.clone())],
        vec![("sec-fetch-site", "same-origin".into())],
        vec![
            ("origin", origin.clone()),
            ("x-csrf-token", other["token"].as_str().unwrap().into()),
        ],
        vec![
            ("origin", origin.clone()),
            ("x-csrf-token", "00".repeat(32)),
        ],
        vec![
            ("sec-fetch-site", "cross-site".into()),
            ("x-csrf-token", token.clone()),
        ],
    ] {
        let (status, body) = logout(headers.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(body["error"], "csrf_refused", "{headers:?}");
        assert!(body["message_fr"].as_str().unwrap().contains("rechargez"));
    }
    // With its token the request reaches the handler (no session here: 401 from it).
    let (status, body) = logout(vec![
        ("origin", origin.clone()),
        ("sec-fetch-site", "same-origin".into()),
        ("x-csrf-token", token.clone()),
    ])
    .await;
    assert_ne!(body["error"], "csrf_refused", "{status} {body}");
    // Other clients (regulation software, curl) send neither header and are unaffected.
    let (_, body) = logout(vec![]).await;
    assert_ne!(body["error"], "csrf_refused", "{body}");
    // Reading never needs the token.
    let response = client
        .get(gateway.url("/api/v1/desk"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // But no API read is answered to another site's page (an <img> on a page the officer
    // opens would have the trail record reads nobody made); the page itself opens.
    for site in ["cross-site", "same-site"] {
        let response = client
            .get(gateway.url("/api/v1/desk"))
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{site}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "csrf_refused", "{site}");
        let page = client
            .get(gateway.url("/"))
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{site}");
    }
    for own in ["same-origin", "none"] {
        let response = client
            .get(gateway.url("/api/v1/desk"))
            .header("sec-fetch-site", own)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{own}");
    }
}
