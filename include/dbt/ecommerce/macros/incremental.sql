{#
  Helpers for the incremental models. The marts cannot carry bookkeeping columns (the contract
  fixes their columns), so the watermark lives in intermediate.int_orders_enriched and the marts
  merge only the rows whose values changed.
#}

{# True when any of `columns` differs between two row aliases (NULL-safe). #}
{% macro rows_differ(columns, left, right) -%}
    (
    {%- for column in columns %}
        {{ left }}.{{ column }} is distinct from {{ right }}.{{ column }}{{ " or" if not loop.last }}
    {%- endfor %}
    )
{%- endmacro %}

{# The lower bound of `_loaded_at` an incremental run re-reads: the newest load already processed
   into `relation` (column `column`) minus the overlap window (var incremental_overlap_hours).
   An empty relation re-reads everything. #}
{% macro incremental_lower_bound(relation, column) -%}
    {{ dbt.dateadd(
        'hour',
        -1 * var('incremental_overlap_hours'),
        "coalesce((select max(" ~ column ~ ") from " ~ relation ~ "), cast('1900-01-01 00:00:00+00' as " ~ dbt.type_timestamp() ~ "))"
    ) }}
{%- endmacro %}
