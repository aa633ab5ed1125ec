//! The operator's apiserver client (`phoenix::apiserver`) against the real kube-apiserver: it
//! negotiates HTTP/2, keeps kube-client's layers (credentials, impersonation headers), and many
//! requests in flight are answered over it.

use http::{Request, StatusCode, Version};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube::client::Body;
use tower::ServiceExt as _;

use crate::harness::{TestNamespace, cluster};

#[tokio::test]
async fn the_operators_client_speaks_http2_to_the_apiserver_with_kubes_layers() {
    let config = cluster().config().await;

    // The apiserver offers HTTP/2 over TLS; the operator's connector takes it.
    let service = phoenix::apiserver::http2_service(&config).expect("service builds");
    let request = Request::get("/version")
        .body(Body::empty())
        .expect("request");
    let response = service.oneshot(request).await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2, "negotiated HTTP/2");

    // kube's Api over it: 32 requests in flight at once are all answered.
    let ns = TestNamespace::new("h2").await;
    let client = phoenix::apiserver::http2_builder(&config)
        .expect("builder")
        .build();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let creates = (0..32).map(|i| {
        let maps = maps.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("cm-{i}"), "labels": {"phoenix-e2e": "h2"}},
                "data": {"i": i.to_string()},
            }))
            .expect("ConfigMap");
            maps.create(&PostParams::default(), &cm).await
        }
    });
    for created in futures::future::join_all(creates).await {
        created.expect("created over the shared connection");
    }
    let listed = maps
        .list(&ListParams::default().labels("phoenix-e2e=h2"))
        .await
        .expect("listed");
    assert_eq!(listed.items.len(), 32);

    // The extra-headers layer is kept: impersonating a user without rights is refused as that
    // user, not served with the admin's credentials.
    let mut as_nobody = config.clone();
    as_nobody.auth_info.impersonate = Some("phoenix-e2e-nobody".into());
    let nobody = phoenix::apiserver::http2_builder(&as_nobody)
        .expect("builder")
        .build();
    match Api::<Namespace>::all(nobody)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing namespaces as a user without rights: {other:?}"),
    }
    ns.cleanup().await;
}
