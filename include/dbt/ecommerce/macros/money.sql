{# Money in the warehouse is major units as numeric(14,2) (data contract). #}
{% macro money(expression) -%}
    cast({{ expression }} as numeric(14,2))
{%- endmacro %}

{# Integer minor units (Stripe cents) to dollars, exactly: a decimal multiplication, because a
   division of decimals is a DOUBLE on fakesnow/DuckDB and would round through binary floats. #}
{% macro cents_to_dollars(expression) -%}
    cast(cast({{ expression }} as numeric(18,0)) * 0.01 as numeric(14,2))
{%- endmacro %}

{# Stripe's integer amount in the charge currency's minor units to major units, exactly (see
   cents_to_dollars): zero-decimal currencies (JPY, KRW, ...) send whole units, three-decimal ones
   (KWD, BHD, ...) thousandths, every other currency hundredths — Stripe's currency list. #}
{% macro minor_to_major(expression, currency) -%}
    {%- set zero_decimal = ['bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd',
                            'vuv', 'xaf', 'xof', 'xpf'] -%}
    {%- set three_decimal = ['bhd', 'jod', 'kwd', 'omr', 'tnd'] -%}
    cast(cast({{ expression }} as numeric(18,0)) * case
        when lower({{ currency }}) in ('{{ zero_decimal | join("', '") }}') then 1.000
        when lower({{ currency }}) in ('{{ three_decimal | join("', '") }}') then 0.001
        else 0.010
    end as numeric(14,2))
{%- endmacro %}

{# Exact sums. SUM over a bare NUMBER column returns a DOUBLE on fakesnow (0.12.1) — e.g. 3140.38
   comes back as 3140.3799999999997 — while SUM over a CAST expression keeps the decimal type; the
   inner cast is a no-op on Postgres and on real Snowflake, so every sum goes through these. #}
{% macro sum_money(expression) -%}
    cast(sum(cast({{ expression }} as numeric(38,2))) as numeric(14,2))
{%- endmacro %}

{% macro sum_integer(expression) -%}
    cast(sum(cast({{ expression }} as bigint)) as bigint)
{%- endmacro %}
