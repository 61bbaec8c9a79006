{#
  Cross-warehouse helpers. Each is dispatched (adapter.dispatch) so Postgres and Snowflake get
  SQL they run natively; the default__ versions are the Postgres/ANSI spelling.

  fakesnow (the local Snowflake, DuckDB underneath) is a Snowflake for these macros too: the
  Snowflake spellings below were chosen among the equivalent ones because fakesnow translates
  them correctly (tests/dbt/test_dbt_snowflake.py builds every model on it).
#}

{# Text at a JSON path of a JSON column: `jsonb` on Postgres, `VARIANT` on Snowflake.
   path is a list of keys, e.g. ['metadata', 'order_id']. NULL when the path is absent. #}
{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'ecommerce')(column, path)) }}
{%- endmacro %}

{% macro default__json_text(column, path) -%}
    ({{ column }} #>> '{ {{- path | join(",") -}} }')
{%- endmacro %}

{% macro snowflake__json_text(column, path) -%}
    {#- get_path + ::varchar returns the bare string (no JSON quotes) for strings, and the JSON
        text for numbers and booleans, exactly like Postgres's #>> -#}
    (get_path({{ column }}, '{{ path | join(".") }}')::varchar)
{%- endmacro %}


{# The UTC calendar date of a timestamp (contract: "dates are UTC"), whatever the session's
   time zone is: Postgres would use the session zone for a plain ::date of a timestamptz. #}
{% macro utc_date(expression) -%}
    {{ return(adapter.dispatch('utc_date', 'ecommerce')(expression)) }}
{%- endmacro %}

{% macro default__utc_date(expression) -%}
    cast(({{ expression }}) at time zone 'UTC' as date)
{%- endmacro %}

{% macro snowflake__utc_date(expression) -%}
    cast(convert_timezone('UTC', {{ expression }}) as date)
{%- endmacro %}


{# A UTC timestamp from unix seconds (Stripe's `created`). #}
{% macro from_unix_seconds(expression) -%}
    {{ return(adapter.dispatch('from_unix_seconds', 'ecommerce')(expression)) }}
{%- endmacro %}

{% macro default__from_unix_seconds(expression) -%}
    to_timestamp({{ expression }})
{%- endmacro %}

{% macro snowflake__from_unix_seconds(expression) -%}
    {#- TIMESTAMP_NTZ holding UTC wall-clock time; to_timestamp_tz(number) is Snowflake's other
        spelling but fakesnow does not implement it -#}
    to_timestamp_ntz({{ expression }})
{%- endmacro %}


{# A string that holds a non-negative integer id as bigint, else NULL (never an error): Stripe's
   metadata.order_id is free text that a merchant could fill with anything. #}
{% macro safe_cast_id(expression) -%}
    {{ return(adapter.dispatch('safe_cast_id', 'ecommerce')(expression)) }}
{%- endmacro %}

{% macro default__safe_cast_id(expression) -%}
    case when ({{ expression }}) ~ '^[0-9]{1,18}$' then cast({{ expression }} as bigint) end
{%- endmacro %}

{% macro snowflake__safe_cast_id(expression) -%}
    case when regexp_like({{ expression }}, '^[0-9]{1,18}$') then cast({{ expression }} as bigint) end
{%- endmacro %}
