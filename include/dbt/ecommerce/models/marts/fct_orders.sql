{#-
  One row per order (contract: marts.fct_orders).

  Incremental on both warehouses: merges on order_id only the rows whose values differ from what
  the table holds (new orders, status changes, late refunds, changed lines). The values come from
  int_orders_enriched, which is itself incremental on raw `_loaded_at`; comparing values here, not
  timestamps, keeps this table exact even when an earlier run failed between the two models.
-#}
{%- set contract_columns = [
    'order_id', 'customer_id', 'ordered_at', 'order_date', 'status', 'channel', 'item_count',
    'gross_amount', 'discount_amount', 'net_amount', 'amount_paid', 'is_fully_paid',
] -%}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='merge',
        tmp_relation_type='transient',
        on_schema_change='fail',
    )
}}

-- a loop writes the column list, which the layout rule cannot indent:
-- noqa: disable=LT02
select
    {%- for column in contract_columns %}
    enriched.{{ column }}{{ "," if not loop.last }}
    {%- endfor %}
-- noqa: enable=LT02
from {{ ref('int_orders_enriched') }} as enriched
{% if is_incremental() %}
left join {{ this }} as current_rows on current_rows.order_id = enriched.order_id
where current_rows.order_id is null
   or {{ rows_differ(contract_columns[1:], 'enriched', 'current_rows') }}
{% endif %}
