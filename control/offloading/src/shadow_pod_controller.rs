//! ShadowPod controller (provider side): admits each ShadowPod against its
//! tenant's quota, runs the real pod (owned by the ShadowPod), and mirrors
//! the pod's status back. A finished pod releases its quota and is never
//! started again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    api::{DeleteParams, PostParams},
    runtime::{
        controller::{self, Action},
        finalizer::{finalizer, Event},
        reflector::{self, ObjectRef, Store},
        watcher, Controller, WatchStreamExt as _,
    },
    Api, Client, Resource as _, ResourceExt as _,
};
use strait_api::{
    authentication::ResourceSlice,
    condition::find_condition,
    names,
    offloading::{PodPhase, ShadowPod, ShadowPodStatus},
    ConditionStatus,
};
use tracing::warn;

use crate::{
    quantity::{describe_shortfall, pod_requests, Resources},
    status::{apply_status, condition, ignore_not_found, merge_conditions},
    Error,
};

pub const FIELD_MANAGER: &str = "strait-offloading-shadowpod";

/// ShadowPods reconciled at once. Each reconcile is a few round trips at
/// most (its reads come from the caches), so a small bound keeps a burst of
/// thousands of ShadowPods from becoming thousands of requests in flight.
const CONCURRENCY: u16 = 16;

/// How a tenant's quota is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Everything is admitted.
    None,
    /// Requests are counted against the grant; containers may omit them.
    Soft,
    /// Requests are counted, and every container must request cpu and memory.
    Hard,
}

impl std::str::FromStr for Enforcement {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "None" => Ok(Self::None),
            "Soft" => Ok(Self::Soft),
            "Hard" => Ok(Self::Hard),
            other => Err(format!(
                "{other:?} is not a quota enforcement: use None, Soft or Hard"
            )),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub default_enforcement: Enforcement,
    /// Admitted, unfinished ShadowPods by uid: (tenant, requests). Kept under
    /// one lock so concurrent admissions never overcommit a tenant.
    ledger: Mutex<HashMap<String, (String, Resources)>>,
    /// Told when quota is released, so refused ShadowPods are looked at again at once.
    released: tokio::sync::mpsc::UnboundedSender<()>,
    released_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<()>>>,
    /// Caches of what admission and reconciles read, so that admitting a
    /// ShadowPod costs no reads on the API server: the real pods (filled
    /// by the watch that also triggers reconciles), the namespaces (which
    /// tenant each belongs to, its quota enforcement) and the grants.
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    slices: Store<ResourceSlice>,
    writers: Mutex<Option<Writers>>,
}

struct Writers {
    pods: reflector::store::Writer<Pod>,
    namespaces: reflector::store::Writer<Namespace>,
    slices: reflector::store::Writer<ResourceSlice>,
}

impl Context {
    pub fn new(client: Client, default_enforcement: Enforcement) -> Self {
        let (released, released_rx) = tokio::sync::mpsc::unbounded_channel();
        let (pods, pods_writer) = reflector::store();
        let (namespaces, namespaces_writer) = reflector::store();
        let (slices, slices_writer) = reflector::store();
        Self {
            client,
            default_enforcement,
            ledger: Mutex::new(HashMap::new()),
            released,
            released_rx: Mutex::new(Some(released_rx)),
            pods,
            namespaces,
            slices,
            writers: Mutex::new(Some(Writers {
                pods: pods_writer,
                namespaces: namespaces_writer,
                slices: slices_writer,
            })),
        }
    }

    fn release(&self, uid: &str) {
        if self.ledger().remove(uid).is_some() {
            let _ = self.released.send(());
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Resources)>> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn is_admitted(shadow: &ShadowPod) -> bool {
    shadow
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Admitted"))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

fn is_finished(phase: PodPhase) -> bool {
    matches!(phase, PodPhase::Succeeded | PodPhase::Failed)
}

pub async fn run(context: Arc<Context>) -> Result<(), Error> {
    let client = context.client.clone();
    // The quota in use survives a restart: it is what the statuses say.
    let tenants = tenant_of_namespaces(&client).await?;
    for shadow in Api::<ShadowPod>::all(client.clone())
        .list(&Default::default())
        .await?
    {
        let finished = shadow.status.as_ref().is_some_and(|s| is_finished(s.phase));
        let tenant = tenants.get(&shadow.namespace().unwrap_or_default());
        if let (true, false, Some(tenant)) = (is_admitted(&shadow), finished, tenant) {
            let requests = pod_requests(&shadow.spec.pod).unwrap_or_default();
            context
                .ledger()
                .insert(shadow.uid().unwrap_or_default(), (tenant.clone(), requests));
        }
    }
    let released = context
        .released_rx
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    let released = futures::stream::unfold(released, |receiver| async move {
        let mut receiver = receiver?;
        receiver.recv().await?;
        Some(((), Some(receiver)))
    });
    let Some(writers) = context
        .writers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
    else {
        // Already running: one controller per Context.
        return Ok(());
    };
    let namespaces = reflect(Api::<Namespace>::all(client.clone()), writers.namespaces);
    let slices = reflect(Api::<ResourceSlice>::all(client.clone()), writers.slices);
    // The pod watch fills the cache before it triggers the reconcile of the
    // pod's ShadowPod, so a reconcile never reads an older pod than the
    // change that woke it.
    let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writers.pods)
        .touched_objects();
    let controller = async {
        // Admission reads namespaces and grants from the caches: wait until
        // they hold the API server's state rather than refuse on an empty one.
        let (namespaces_ready, slices_ready) = futures::join!(
            context.namespaces.wait_until_ready(),
            context.slices.wait_until_ready()
        );
        if namespaces_ready.is_err() || slices_ready.is_err() {
            return;
        }
        Controller::new(
            Api::<ShadowPod>::all(client.clone()),
            watcher::Config::default(),
        )
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .owns_stream(pods)
        .reconcile_all_on(released)
        .run(
            reconcile,
            |_, _: &Error, _| Action::requeue(Duration::from_secs(2)),
            context.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "ShadowPod reconcile failed");
            }
        })
        .await;
    };
    futures::join!(namespaces, slices, controller);
    Ok(())
}

/// Keeps `writer`'s cache in step with the objects of `api`, forever.
async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn tenant_of_namespaces(client: &Client) -> Result<HashMap<String, String>, Error> {
    Ok(Api::<Namespace>::all(client.clone())
        .list(&Default::default())
        .await?
        .into_iter()
        .filter_map(|ns| {
            let tenant = ns.labels().get(names::label::REMOTE_CLUSTER_ID)?.clone();
            Some((ns.name_any(), tenant))
        })
        .collect())
}

async fn reconcile(shadow: Arc<ShadowPod>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = shadow.namespace().ok_or(Error::Unnamed("ShadowPod"))?;
    let api = Api::<ShadowPod>::namespaced(context.client.clone(), &namespace);
    // Until the pod cache holds the API server's pods, "no pod" could be
    // stale; the other caches were waited for before the controller started.
    // Looked at, not awaited: with many reconciles waiting at once, only one
    // was woken when the cache filled, and the others hung for good.
    match context.pods.wait_until_ready().now_or_never() {
        Some(Ok(())) => {}
        Some(Err(_)) => return Err(Error::Waiting("the pod cache stopped".into())),
        None => return Ok(Action::requeue(Duration::from_millis(100))),
    }
    finalizer(&api, names::finalizer::SHADOW_POD, shadow, |event| async {
        match event {
            Event::Apply(shadow) => {
                let pod = context
                    .pods
                    .get(&ObjectRef::new(&shadow.name_any()).within(&namespace));
                apply(&shadow, pod.as_deref(), &context, &api, &namespace).await
            }
            Event::Cleanup(shadow) => cleanup(&shadow, &context, &namespace).await,
        }
    })
    .await
    .map_err(Error::finalizer)
}

fn phase_of(pod: &Pod) -> PodPhase {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        // A pod no kubelet has reported on yet waits to start.
        None => PodPhase::Pending,
        _ => PodPhase::Unknown,
    }
}

/// `pod` is the cached pod of the ShadowPod's name, if any.
async fn apply(
    shadow: &ShadowPod,
    pod: Option<&Pod>,
    context: &Context,
    api: &Api<ShadowPod>,
    namespace: &str,
) -> Result<Action, Error> {
    let name = shadow.name_any();
    let uid = shadow.uid().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(context.client.clone(), namespace);
    let mut status = shadow.status.clone().unwrap_or_default();
    if let Some(pod) = pod {
        let owned = pod.owner_references().iter().any(|o| o.uid == uid);
        if !owned {
            merge_conditions(&mut status.conditions, vec![condition("Admitted", false, "NameTaken", format!("pod {namespace}/{name} exists and is not this ShadowPod's: delete it or rename the pod"))], shadow.metadata.generation);
        } else {
            // Its pod exists, so it was admitted. Said again on every write:
            // the status read from the cache may predate the admission, and
            // writing its old refusal back would leave the consumer's pod
            // Pending for QuotaExceeded while it runs.
            merge_conditions(
                &mut status.conditions,
                vec![admitted_condition()],
                shadow.metadata.generation,
            );
            status.phase = phase_of(pod);
            status.pod_status = pod.status.clone();
            if is_finished(status.phase) {
                context.release(&uid);
            }
        }
        return write_status(shadow, api, status).await;
    }
    if is_finished(status.phase) {
        // A completed pod is never resurrected.
        return Ok(Action::await_change());
    }
    let verdict = admit(shadow, context, namespace)?;
    let admitted = verdict.is_ok();
    let update = match &verdict {
        Ok(()) => admitted_condition(),
        Err((reason, message)) => condition("Admitted", false, reason, message.clone()),
    };
    merge_conditions(
        &mut status.conditions,
        vec![update],
        shadow.metadata.generation,
    );
    if admitted {
        status.phase = PodPhase::Pending;
        let mut pod = Pod {
            spec: Some(shadow.spec.pod.clone()),
            ..Pod::default()
        };
        pod.metadata.name = Some(name.clone());
        pod.metadata.labels = Some(shadow.labels().clone());
        pod.metadata.annotations = Some(shadow.annotations().clone());
        pod.metadata.owner_references = shadow.controller_owner_ref(&()).map(|o| vec![o]);
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                context.ledger().remove(&uid);
                return Err(error.into());
            }
        }
    } else {
        status.phase = PodPhase::Pending;
    }
    write_status(shadow, api, status).await?;
    // Refused pods are looked at again: quota frees up when others finish.
    Ok(if admitted {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(5))
    })
}

fn admitted_condition() -> strait_api::ConditionUpdate<'static> {
    condition(
        "Admitted",
        true,
        "WithinQuota",
        "admitted within the tenant's quota",
    )
}

async fn write_status(
    shadow: &ShadowPod,
    api: &Api<ShadowPod>,
    status: ShadowPodStatus,
) -> Result<Action, Error> {
    if shadow.status.as_ref() != Some(&status) {
        apply_status(api, &shadow.name_any(), FIELD_MANAGER, &status).await?;
    }
    Ok(Action::await_change())
}

/// Admits `shadow` into its tenant's ledger, or says why not.
fn admit(
    shadow: &ShadowPod,
    context: &Context,
    namespace: &str,
) -> Result<Result<(), (&'static str, String)>, Error> {
    let uid = shadow.uid().unwrap_or_default();
    if context.ledger().contains_key(&uid) {
        return Ok(Ok(()));
    }
    let ns = context.namespaces.get(&ObjectRef::new(namespace));
    let Some(tenant) = ns
        .as_ref()
        .and_then(|ns| ns.labels().get(names::label::REMOTE_CLUSTER_ID))
        .cloned()
    else {
        return Ok(Err(("NotATenantNamespace", format!("namespace {namespace} was not created for a consumer (no {} label): ShadowPods only run in offloaded namespaces", names::label::REMOTE_CLUSTER_ID))));
    };
    let tenant_namespace = names::tenant_namespace(&tenant);
    let tenant_ns = context.namespaces.get(&ObjectRef::new(&tenant_namespace));
    let enforcement = match tenant_ns
        .as_ref()
        .and_then(|ns| ns.annotations().get(names::annotation::QUOTA_ENFORCEMENT))
    {
        Some(text) => match text.parse::<Enforcement>() {
            Ok(enforcement) => enforcement,
            Err(message) => {
                return Ok(Err((
                    "InvalidEnforcement",
                    format!(
                        "annotation {} on {tenant_namespace}: {message}",
                        names::annotation::QUOTA_ENFORCEMENT
                    ),
                )))
            }
        },
        None => context.default_enforcement,
    };
    let requests = match pod_requests(&shadow.spec.pod) {
        Ok(requests) => requests,
        Err(error) => return Ok(Err(("InvalidResources", error.to_string()))),
    };
    if enforcement == Enforcement::Hard {
        for container in &shadow.spec.pod.containers {
            let declared = |name: &str| {
                let r = container.resources.as_ref();
                r.and_then(|r| r.requests.as_ref())
                    .is_some_and(|m| m.contains_key(name))
                    || r.and_then(|r| r.limits.as_ref())
                        .is_some_and(|m| m.contains_key(name))
            };
            if !declared("cpu") || !declared("memory") {
                return Ok(Err((
                    "RequestsRequired",
                    format!(
                        "tenant {tenant}'s quota is Hard: container {} must request cpu and memory",
                        container.name
                    ),
                )));
            }
        }
    }
    let mut grant = Resources::default();
    if enforcement != Enforcement::None {
        let slices = context.slices.state();
        for slice in slices
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(tenant_namespace.as_str()))
        {
            if let Some(status) = &slice.status {
                match Resources::from_list(&status.resources) {
                    Ok(granted) => grant.add(&granted),
                    Err(error) => {
                        warn!(slice = %slice.name_any(), %error, "ignoring an unreadable grant")
                    }
                }
            }
        }
        if grant.0.is_empty() {
            return Ok(Err(("NoGrant", format!("no ResourceSlice in {tenant_namespace} grants resources to {tenant}: nothing can run until one is accepted"))));
        }
    }
    let mut ledger = context.ledger();
    if enforcement != Enforcement::None {
        let mut wanted = Resources::default();
        for (owner, used) in ledger.values() {
            if *owner == tenant {
                wanted.add(used);
            }
        }
        wanted.add(&requests);
        let shortfall = grant.shortfall(&wanted);
        if !shortfall.is_empty() {
            let left: Vec<_> = shortfall
                .into_iter()
                .map(|(name, _, limit)| {
                    let need = requests.0.get(&name).copied().unwrap_or(0);
                    let used = wanted.0.get(&name).copied().unwrap_or(0) - need;
                    (name, need, (limit - used).max(0))
                })
                .collect();
            return Ok(Err((
                "QuotaExceeded",
                format!(
                    "tenant {tenant}'s quota is exhausted: {}",
                    describe_shortfall(&left)
                ),
            )));
        }
    }
    ledger.insert(uid, (tenant, requests));
    Ok(Ok(()))
}

async fn cleanup(shadow: &ShadowPod, context: &Context, namespace: &str) -> Result<Action, Error> {
    context.release(&shadow.uid().unwrap_or_default());
    let pods = Api::<Pod>::namespaced(context.client.clone(), namespace);
    let name = shadow.name_any();
    let owned = |pod: &Pod| {
        pod.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == shadow.metadata.uid.as_ref())
    };
    match pods.get_opt(&name).await? {
        Some(pod) if owned(&pod) => {
            ignore_not_found(pods.delete(&name, &DeleteParams::default()).await)?;
            if pods.get_opt(&name).await?.is_some_and(|p| owned(&p)) {
                return Err(Error::Waiting(format!(
                    "pod {namespace}/{name} is terminating"
                )));
            }
            Ok(Action::await_change())
        }
        _ => Ok(Action::await_change()),
    }
}

/// Whether the ShadowPod's status says its pod ran to completion.
pub fn finished(status: &ShadowPodStatus) -> bool {
    is_finished(status.phase)
}

#[cfg(test)]
mod tests {
    use kube::api::PostParams;
    use serde_json::json;
    use strait_testkit::TestCluster;

    use super::*;

    /// The controller's cache may still hold a ShadowPod as it was before
    /// its admission when the pod's first status change comes in: that old
    /// refusal must not be written back next to the running pod's status.
    #[tokio::test]
    async fn a_stale_refusal_is_not_written_back_once_the_pod_runs() {
        let cluster = TestCluster::start("shadow-stale").await.expect("starts");
        let client = cluster.client();
        let namespace = "work-from-consumer";
        let namespaces = Api::<Namespace>::all(client.clone());
        let labelled: Namespace = serde_json::from_value(json!({"metadata": {
            "name": namespace, "labels": {names::label::REMOTE_CLUSTER_ID: "consumer"}}}))
        .expect("namespace");
        namespaces
            .create(&PostParams::default(), &labelled)
            .await
            .expect("namespace");
        let api = Api::<ShadowPod>::namespaced(client.clone(), namespace);
        let shadow: ShadowPod = serde_json::from_value(json!({
            "apiVersion": "offloading.strait.dev/v1beta1", "kind": "ShadowPod",
            "metadata": {"name": "job"},
            "spec": {"pod": {"containers": [{"name": "app", "image": "app:1"}]}},
        }))
        .expect("shadow");
        api.create(&PostParams::default(), &shadow)
            .await
            .expect("create");
        let mut refused = ShadowPodStatus {
            phase: PodPhase::Pending,
            conditions: Vec::new(),
            pod_status: None,
        };
        merge_conditions(
            &mut refused.conditions,
            vec![condition("Admitted", false, "QuotaExceeded", "no cpu left")],
            Some(1),
        );
        apply_status(&api, "job", FIELD_MANAGER, &refused)
            .await
            .expect("refusal");
        let stale = api.get("job").await.expect("stale read");
        // Admitted since: the pod runs, and the admission is on record.
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "job"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }))
        .expect("pod");
        pod.metadata.owner_references = stale.controller_owner_ref(&()).map(|o| vec![o]);
        let pods = Api::<Pod>::namespaced(client.clone(), namespace);
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod");
        pods.patch_status(
            "job",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .expect("running");

        let context = Context::new(client.clone(), Enforcement::Hard);
        let pod = pods.get("job").await.expect("pod");
        apply(&stale, Some(&pod), &context, &api, namespace)
            .await
            .expect("reconcile");

        let status = api.get("job").await.expect("read").status.expect("status");
        assert_eq!(status.phase, PodPhase::Running);
        let admitted = find_condition(&status.conditions, "Admitted").expect("Admitted");
        assert_eq!(
            (admitted.status, admitted.reason.as_str()),
            (ConditionStatus::True, "WithinQuota"),
            "{admitted:?}"
        );
    }

    /// Many ShadowPods arriving at once, reconciled concurrently, never
    /// overcommit the tenant's grant: exactly as many run as fit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_admissions_never_exceed_the_grant() {
        let cluster = TestCluster::start("shadow-quota").await.expect("starts");
        let client = cluster.client();
        let tenant_namespace = names::tenant_namespace("consumer");
        let work = "work-from-consumer";
        let namespaces = Api::<Namespace>::all(client.clone());
        for value in [
            json!({"metadata": {"name": tenant_namespace}}),
            json!({"metadata": {"name": work, "labels": {names::label::REMOTE_CLUSTER_ID: "consumer"}}}),
        ] {
            let namespace: Namespace = serde_json::from_value(value).expect("namespace");
            namespaces
                .create(&PostParams::default(), &namespace)
                .await
                .expect("namespace");
        }
        let slices = Api::<ResourceSlice>::namespaced(client.clone(), &tenant_namespace);
        let grant = json!({"cpu": "1", "memory": "1Gi", "pods": "100"});
        let slice: ResourceSlice = serde_json::from_value(json!({
            "apiVersion": "authentication.strait.dev/v1beta1", "kind": "ResourceSlice",
            "metadata": {"name": "default"},
            "spec": {"consumerClusterID": "consumer", "providerClusterID": "provider", "resources": grant},
        }))
        .expect("slice");
        slices
            .create(&PostParams::default(), &slice)
            .await
            .expect("slice");
        slices
            .patch_status(
                "default",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"resources": grant}})),
            )
            .await
            .expect("grant");
        let controller = tokio::spawn(run(Arc::new(Context::new(
            client.clone(),
            Enforcement::Hard,
        ))));
        // A quarter of the cpu each: four fit.
        let shadows = Api::<ShadowPod>::namespaced(client.clone(), work);
        let creations = (0..12).map(|i| {
            let shadows = shadows.clone();
            async move {
                let shadow: ShadowPod = serde_json::from_value(json!({
                    "apiVersion": "offloading.strait.dev/v1beta1", "kind": "ShadowPod",
                    "metadata": {"name": format!("job-{i}")},
                    "spec": {"pod": {"containers": [{"name": "app", "image": "app:1",
                        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}},
                }))
                .expect("shadow");
                shadows.create(&PostParams::default(), &shadow).await
            }
        });
        for created in futures::future::join_all(creations).await {
            created.expect("create");
        }
        let verdicts = || async {
            let list = shadows.list(&Default::default()).await.expect("list");
            list.items
                .iter()
                .filter_map(|s| {
                    find_condition(&s.status.as_ref()?.conditions, "Admitted").map(|c| c.status)
                })
                .collect::<Vec<_>>()
        };
        strait_testkit::eventually(
            "every ShadowPod has a verdict",
            Duration::from_secs(30),
            || async { verdicts().await.len() == 12 },
        )
        .await;
        let admitted = verdicts()
            .await
            .into_iter()
            .filter(|v| *v == ConditionStatus::True)
            .count();
        let pods = Api::<Pod>::namespaced(client.clone(), work)
            .list(&Default::default())
            .await
            .expect("pods")
            .items
            .len();
        controller.abort();
        assert_eq!(
            (admitted, pods),
            (4, 4),
            "admitted ShadowPods and their pods"
        );
    }
}
