-- Argo CD health check for paiflow-operator.dev/PaiPipelineRun: a PAI pipeline run mirrored by paiflow-operator.
-- It reads the kstatus conditions the operator writes, in kstatus' own order, so Argo CD and Flux agree:
--   Progressing  before the operator's first sync, until it has observed a spec change, while a launched run is
--                being created (Reconciling=True, reason Creating), and while the run is Initialized, Running,
--                Terminating or Unknown (a transient sync error is named in the message)
--   Degraded     Stalled=True: the run Failed, was Terminated or Skipped, or syncing needs a human
--                (RunNotFound, AuthenticationFailed, SecretNotFound, SecretForbidden, PipelineNotFound,
--                InvalidLaunch, PermissionDenied, ...)
--   Healthy      Succeeded=True
--   Suspended    spec.suspend, or PAI's own Suspended state
--   Unknown      a PAI status this check does not know
-- Only Lua's base and table libraries are used: it runs in argocd-cm without useOpenLibs.
local hs = {}

local function findCondition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function isTrue(condition)
  return condition ~= nil and condition.status == "True"
end

-- "Reason: message", or whichever of the two there is.
local function explain(condition)
  if condition.message == nil or condition.message == "" then
    return condition.reason or condition.type
  end
  if condition.reason == nil or condition.reason == "" then
    return condition.message
  end
  return condition.reason .. ": " .. condition.message
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's first sync with PAI"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local runStatus = status.runStatus
local ready = findCondition("Ready")
local succeeded = findCondition("Succeeded")
local reconciling = findCondition("Reconciling")
local stalled = findCondition("Stalled")

if isTrue(stalled) then
  hs.status = "Degraded"
  if stalled.reason == runStatus then
    hs.message = stalled.message -- PAI run is Failed: <PAI's message>
  else
    hs.message = explain(stalled) -- RunNotFound: <what PAI said>
  end
  return hs
end

if succeeded ~= nil and succeeded.status == "False" then
  hs.status = "Degraded"
  hs.message = succeeded.message
  return hs
end

if isTrue(succeeded) then
  hs.status = "Healthy"
  hs.message = succeeded.message
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  if ready ~= nil and ready.reason == "Suspended" and ready.message ~= nil then
    hs.message = ready.message
  else
    hs.message = "Polling is suspended by spec.suspend"
  end
  if runStatus ~= nil then
    hs.message = hs.message .. " (PAI run is " .. runStatus .. ")"
  end
  return hs
end

if runStatus == "Suspended" then
  hs.status = "Suspended"
  hs.message = (succeeded ~= nil and succeeded.message) or "PAI run is Suspended"
  return hs
end

if isTrue(reconciling) then
  hs.status = "Progressing"
  hs.message = reconciling.message
elseif runStatus ~= nil then
  hs.status = "Unknown"
  hs.message = "PAI run is " .. runStatus .. ", a status this health check does not know"
else
  hs.status = "Progressing"
  hs.message = (succeeded ~= nil and succeeded.message) or "Waiting for the first answer from PAI"
end
if ready ~= nil and ready.status ~= "True" then
  hs.message = hs.message .. "; " .. explain(ready)
end
return hs
