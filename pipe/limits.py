"""Every AWS limit and timing fact the pipe relies on, each with where AWS documents it.

Facts are declared here once; modules import them by name so a limit never drifts between the check
that enforces it and the message that explains it.
"""

from __future__ import annotations

# --- SSM SendCommand (API Reference, SendCommand request parameters) -------------------------------
MAX_INSTANCE_IDS = 50  # InstanceIds: "Maximum number of 50 items"
MAX_TARGETS = 5  # Targets: "Maximum number of 5 items"
MAX_TARGET_VALUES = 50  # Target.Values: "Maximum number of 50 items"
COMMENT_LIMIT = 100  # Comment: "Maximum length of 100"
DELIVERY_TIMEOUT_RANGE = (30, 2592000)  # TimeoutSeconds: "Minimum value of 30. Maximum value of 2592000"
# the pipe's own bound for the script it puts in SendCommand's parameters (AWS caps the whole request)
MAX_SCRIPT_BYTES = 64 * 1024

# --- AWS-RunShellScript / AWS-RunPowerShellScript documents --------------------------------------
EXECUTION_TIMEOUT_RANGE = (1, 172800)  # executionTimeout: "up to 172800 (48 hours)"

# --- SSM GetCommandInvocation (API Reference) ----------------------------------------------------
STDOUT_FIELD_LIMIT = 24000  # StandardOutputContent: "first 24,000 characters"
STDERR_FIELD_LIMIT = 8000  # StandardErrorContent: "first 8,000 characters"

# --- SSM read APIs ---------------------------------------------------------------------------------
GET_PARAMETERS_BATCH = 10  # GetParameters Names: "Maximum number of 10 items"
DESCRIBE_FILTER_BATCH = 50  # DescribeInstanceInformation filter values: the pipe asks 50 ids at a time
LIST_INVOCATIONS_PAGE = 50  # ListCommandInvocations MaxResults: "Maximum value of 50"
LIST_COMMANDS_PAGE = 50  # ListCommands MaxResults (CommandMaxResults): "Maximum value of 50"
# ListCommandInvocations with Details: a plugin's Output is "Maximum length of 2500" (CommandPluginOutput);
# the SSM Agent fills it with stdout, then stderr, cut to 2,400 bytes with truncation marks
# (amazon-ssm-agent, agent/contracts/plugin.go: MaximumPluginOutputSize, TruncateOutput)
PLUGIN_OUTPUT_LIMIT = 2500

# --- STS (API Reference, AssumeRole) -------------------------------------------------------------
SESSION_NAME_LIMIT = 64  # RoleSessionName: "Maximum length of 64"
# role chaining limits a session to one hour ("Using IAM roles: role chaining"); refreshed before it ends
ROLE_DURATION_SECONDS = 3600

# --- SSM Agent behaviour -----------------------------------------------------------------------------
# The agent uploads output to CloudWatch Logs as it arrives and at least every 30 s (SSM User Guide,
# "Configuring Amazon CloudWatch Logs for Run Command"); the pipe reads back a little further.
AGENT_UPLOAD_SECONDS = 30
LOG_LOOKBACK_SECONDS = AGENT_UPLOAD_SECONDS + 5
# It reads each stdout/stderr file with a 200,000-byte buffer (bufio ReadSlice): a longer line reaches
# CloudWatch cut in events of exactly this many bytes, the line's rest starting the next event of the
# stream (amazon-ssm-agent, agent/agentlogstocloudwatch/cloudwatchlogspublisher/cloudwatchlogsservice.go:
# MessageLengthThresholdInBytes, getNextMessage). A character the cut splits arrives as U+FFFD.
AGENT_EVENT_BYTES = 200 * 1000

# --- CloudWatch Logs reads (API Reference: FilterLogEvents, StartLiveTail; User Guide, "CloudWatch Logs
# quotas") -------------------------------------------------------------------------------------------
# FilterLogEvents: "returns as many log events as can fit in 1 MB (up to 10,000 log events)"; limit's default
FILTER_PAGE_MAX_EVENTS = 10_000
# "FilterLogEvents throttle limit in transactions per second": 5 in the smallest Regions (eu-central-1,
# ap-northeast-3, ...), 10 in most, 25 in us-east-1; per account and Region, not adjustable
FILTER_LOG_EVENTS_TPS_MIN = 5
# StartLiveTail: logStreamNamePrefixes "Maximum number of 100 items" (service model, InputLogStreamNames)
LIVE_TAIL_MAX_PREFIXES = 100
LIVE_TAIL_SAMPLED_ABOVE = 500  # events a second: "sampled down to 500 log events" beyond
LIVE_TAIL_SESSION_SECONDS = 3 * 3600  # SessionTimeoutException "after it has been kept open for three hours"
LIVE_TAIL_CONCURRENT_SESSIONS = 15  # "Live Tail concurrent sessions limit: 15" per account (adjustable)
START_LIVE_TAIL_TPS = 5  # "StartLiveTail throttle limit in transactions per second: 5"

# --- Bitbucket Pipelines -------------------------------------------------------------------------------
BUILD_LOG_LIMIT_BYTES = 50 * 1024 * 1024  # "logs larger than 50 MB are truncated"

# --- Bitbucket Cloud Code Insights (REST API reference, "Reports") ------------------------------------
# Bulk create or update annotations: "a report can contain up to 1000 annotations" and "You can upload up
# to 100 annotations per POST request".
ANNOTATIONS_PER_REPORT = 1000
ANNOTATIONS_PER_REQUEST = 100
# An annotation's summary: the API answers 400 "The summary field cannot contain more than 450
# characters." (quoted in reviewdog/reviewdog#1285; the reference gives no length)
ANNOTATION_SUMMARY_MAX = 450
# The Cloud reference gives no length for a report's title and details, nor an annotation's details;
# the pipe keeps to Bitbucket Data Center's documented bounds ("title" 450, "details" 2000 characters)
REPORT_TITLE_MAX = 450
REPORT_DETAILS_MAX = 2000
# A report's data fields: at most 10 (Bitbucket Data Center documents 6; the pipe sends at most 8)
REPORT_DATA_FIELDS_MAX = 10

# --- Amazon S3 (User Guide, "Amazon S3 multipart upload limits"; PutObject) ------------------------
S3_PUT_OBJECT_MAX_BYTES = 5 * 1024**3  # PutObject: "upload a single object up to 5 GB"
S3_PART_MIN_BYTES = 5 * 1024**2  # "Part size 5 MiB to 5 GiB. There is no minimum size limit on the last part"
S3_MAX_PARTS = 10_000  # "Maximum number of parts per upload 10,000"
S3_KEY_MAX_BYTES = 1024  # object key names: "up to 1,024 bytes long" (UTF-8)

# --- SSM Parameter Store (User Guide, "Managing parameter tiers"; API Reference) -------------------
# Standard tier: "Maximum size of a parameter value 4 KB"; PutParameter's error says "a maximum
# parameter value of 4096 characters".
PARAMETER_VALUE_STANDARD_MAX = 4096
PARAMETER_VALUE_ADVANCED_MAX = 8192  # advanced tier: 8 KB
PARAMETER_VERSIONS_KEPT = 100  # "Parameter Store retains the 100 most recently created versions"
PARAMETER_HISTORY_PAGE = 50  # GetParameterHistory MaxResults: "Maximum value of 50"
PARAMETER_NAME_MAX = 1011  # "The maximum length for a parameter name that you specify is 1011 characters"

# --- IAM and STS (API References, AccessKey and Credentials data types) ----------------------------
ACCESS_KEY_ID_MAX = 128  # AccessKeyId: "Maximum length of 128. Pattern: [\w]+"

# --- Linux, where the image runs: a path's one name (NAME_MAX, <linux/limits.h>) ----------------------
FILE_NAME_MAX_BYTES = 255
